// Hostile config.json values: sizes far past any model (10^7 layers grew to 22 GB of expected-tensor names;
// 2^31-1 hung), products that overflow int, and floats that are finite as doubles but infinite as the
// float32 the engine computes with (rope_theta 1e308 loaded, then prefill threw ArgumentOutOfRangeException
// from CpuOps.Rope). Each is a ModelConfigException or ModelFormatException at load, before anything
// proportional to the bad size is allocated.
using System.Text.Json.Nodes;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Models;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class HostileConfigTests
{
    public static TheoryData<string, string, string> BadConfigs => new()
    {
        { "10^7 vision layers", """{"vision_config": {"num_hidden_layers": 10000000}}""", "vision_config.num_hidden_layers 10000000 is larger than the 1024 supported" },
        { "2^31-1 vision layers", """{"vision_config": {"num_hidden_layers": 2147483647}}""", "vision_config.num_hidden_layers 2147483647 is larger than the 1024 supported" },
        { "2^31-1 text layers", """{"text_config": {"num_hidden_layers": 2147483647}}""", "text_config.num_hidden_layers 2147483647 is larger than the 1024 supported" },
        { "hidden 2^30", """{"text_config": {"hidden_size": 1073741824, "num_attention_heads": 1}}""", "text_config.hidden_size 1073741824 is larger than the 262144 supported" },
        { "heads x head_dim overflow", """{"text_config": {"num_attention_heads": 1024, "num_key_value_heads": 1024, "head_dim": 131072}}""", "num_attention_heads x head_dim = 134217728" },
        { "vocab 2^31-1", """{"text_config": {"vocab_size": 2147483647}}""", "text_config.vocab_size 2147483647 is larger than the 16777216 supported" },
        { "image size 2^30", """{"vision_config": {"image_size": 1073741824, "patch_size": 1}}""", "vision_config.image_size 1073741824 is larger than the 4096 supported" },
        { "patch larger than image", """{"vision_config": {"image_size": 336, "patch_size": 672}}""", "vision_config.patch_size 672 is larger than the 336 supported" },
        { "context 2^31-1", """{"text_config": {"max_position_embeddings": 2147483647}}""", "max_position_embeddings 2147483647 is larger" },
        { "rope_theta 1e308", """{"text_config": {"rope_theta": 1e308}}""", "text_config.rope_theta 1E+308 is beyond the float32 range" },
        { "rope_theta 1e-60", """{"text_config": {"rope_theta": 1e-60}}""", "rope_theta 0 must be a positive finite float32" },
        { "rope_parameters theta 1e39", """{"text_config": {"rope_parameters": {"rope_theta": 1e39, "rope_type": "default"}}}""", "rope_parameters.rope_theta 1E+39 is beyond the float32 range" },
        { "rms eps 1e300", """{"text_config": {"rms_norm_eps": 1e300}}""", "rms_norm_eps 1E+300 is beyond the float32 range" },
        { "layer norm eps 1e-50", """{"vision_config": {"layer_norm_eps": 1e-50}}""", "layer_norm_eps 0 must be a positive finite float32" },
        { "100 feature layers", """{"vision_feature_layer": [""" + string.Join(", ", Enumerable.Repeat("-2", 100)) + "]}", "vision_feature_layer lists 100 layers" },
    };

    [Theory, MemberData(nameof(BadConfigs))]
    public void BadSizesAreTypedErrorsAtParse(string label, string json, string expected)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<ModelConfigException>(() => LlavaConfig.Parse(json, "config.json"));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(e.Message.Contains(expected, StringComparison.Ordinal), $"{label}: {e.Message}");
        Assert.True(allocated < 1 << 20, $"{label}: {allocated} bytes allocated");
    }

    // Within the caps, but more layers than the checkpoint has tensors for: refused by counting, before the
    // expected tensors are listed.
    [Theory]
    [InlineData("vision_config", 1000, "vision layers and")]
    [InlineData("text_config", 1000, "decoder layers need at least")]
    public void MoreLayersThanTensorsIsATypedErrorAtLoad(string part, int layers, string expected)
    {
        var dir = TestModels.CopyOf(TestModels.Tiny());
        var path = Path.Combine(dir, "config.json");
        var cfg = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        cfg[part]!["num_hidden_layers"] = layers;
        if (part == "vision_config") cfg["vision_feature_layer"] = -2;
        File.WriteAllText(path, cfg.ToJsonString());
        var e = Assert.Throws<ModelFormatException>(() => LlavaModel.Load(dir, new CpuBackend()));
        Assert.Contains(expected, e.Message);
        Assert.Contains("the checkpoint holds", e.Message);
    }
}
