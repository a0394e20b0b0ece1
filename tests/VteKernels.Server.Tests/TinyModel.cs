// The shared test model: the tiny synthetic preset (random weights, 4 decoder layers, 64 tokens per image,
// context 1024) written once per test run, loaded on the CPU backend, and the bundled sample image.
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using VteKernels.Extensions.AI;
using VteKernels.Server;
using VteKernels.Synth;
using VteKernels.Text;

namespace VteKernels.Server.Tests;

internal static class TinyModel
{
    private static readonly Lazy<(string Dir, LlavaModel Model, Tokenizer Tokenizer)> Shared = new(() =>
    {
        var dir = Path.Combine(Path.GetTempPath(), "vtekernels-server-tests", Guid.NewGuid().ToString("N"), "synth-tiny");
        SyntheticModel.Write(SynthPreset.Get("tiny"), dir, seed: 0, DType.F32);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(Path.GetDirectoryName(dir)!, recursive: true); }
            catch (IOException) { }
        };
        return (dir, LlavaModel.Load(dir, new CpuBackend()), Tokenizer.Load(dir));
    });

    public static string Dir => Shared.Value.Dir;
    public static LlavaModel Model => Shared.Value.Model;
    public static Tokenizer Tokenizer => Shared.Value.Tokenizer;
    public const string Id = "synth-tiny";

    public static byte[] SamplePng { get; } = File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "assets", "sample.png"));
    public static string SampleDataUri => "data:image/png;base64," + Convert.ToBase64String(SamplePng);

    public static VteChatClient Client(VteChatClientOptions? options = null) => new(Model, Tokenizer, Dir, options);

    /// <summary>A server on a free loopback port over its own client.</summary>
    public static async Task<RunningServer> StartServer(VteServerOptions? options = null, VteChatClientOptions? clientOptions = null)
    {
        var client = Client(clientOptions);
        var server = await VteServer.StartAsync(client, (options ?? new VteServerOptions()) with { Host = "127.0.0.1", Port = 0 });
        return new RunningServer(server, client);
    }
}

internal sealed class RunningServer(VteServer server, VteChatClient client) : IAsyncDisposable
{
    public VteServer Server => server;
    public VteChatClient Client => client;
    public Uri Address => server.Address;
    public Uri Api => new(server.Address, "/v1");

    public async ValueTask DisposeAsync()
    {
        await server.DisposeAsync();
        client.Dispose();
    }
}

/// <summary>Every test that runs the model shares it, one at a time.</summary>
[CollectionDefinition("model", DisableParallelization = true)]
public sealed class ModelCollection;
