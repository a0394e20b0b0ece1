// One InferenceSession used from two threads at once corrupted it silently (position 175 instead of 176,
// KV layers of different lengths, later ArgumentExceptions): a step that starts while another runs now
// throws InvalidOperationException at once and leaves the running step untouched. Several sessions of one
// model on the CPU backend run at the same time and give exactly the tokens they give one after another.
using VteKernels.Backends;
using VteKernels.Backends.Cpu;
using VteKernels.Engine;
using Xunit;

namespace VteKernels.Tests.Engine;

public sealed class SessionConcurrencyTests
{
    // The CPU backend with one gate: the first Embedding call after Arm() blocks until Release(), so a test
    // can hold a step in the middle for as long as it needs.
    private sealed class GatedBackend : IBackend
    {
        private readonly CpuBackend _cpu = new();
        private readonly ManualResetEventSlim _entered = new(), _release = new();
        private int _armed;

        public void Arm() => Volatile.Write(ref _armed, 1);
        public void WaitEntered() => Assert.True(_entered.Wait(TimeSpan.FromMinutes(5)), "the step never reached the gate");
        public void Release() => _release.Set();

        public string Name => _cpu.Name;
        public string Device => _cpu.Device;
        public DeviceWeight Upload(Weight weight) => _cpu.Upload(weight);
        public Tensor Allocate(int rows, int cols) => _cpu.Allocate(rows, cols);
        public void CopyFromHost(ReadOnlySpan<float> src, Tensor dst) => _cpu.CopyFromHost(src, dst);
        public void CopyToHost(Tensor src, Span<float> dst) => _cpu.CopyToHost(src, dst);
        public void CopyBlock(Tensor src, int srcRow, int srcCol, Tensor dst, int dstRow, int dstCol, int rows, int cols) =>
            _cpu.CopyBlock(src, srcRow, srcCol, dst, dstRow, dstCol, rows, cols);

        public void Embedding(DeviceWeight table, ReadOnlySpan<int> ids, Tensor dst)
        {
            if (Interlocked.Exchange(ref _armed, 0) == 1)
            {
                _entered.Set();
                _release.Wait();
            }
            _cpu.Embedding(table, ids, dst);
        }

        public void PatchEmbed(ReadOnlySpan<float> pixels, int channels, int height, int width, int patch, DeviceWeight conv, Tensor dst) =>
            _cpu.PatchEmbed(pixels, channels, height, width, patch, conv, dst);
        public void Linear(Tensor x, DeviceWeight w, DeviceWeight? bias, Tensor y) => _cpu.Linear(x, w, bias, y);
        public void RmsNorm(Tensor x, DeviceWeight gamma, float eps, Tensor y) => _cpu.RmsNorm(x, gamma, eps, y);
        public void LayerNorm(Tensor x, DeviceWeight gamma, DeviceWeight beta, float eps, Tensor y) => _cpu.LayerNorm(x, gamma, beta, eps, y);
        public void Add(Tensor a, Tensor b, Tensor y) => _cpu.Add(a, b, y);
        public void AddWeight(Tensor x, DeviceWeight w) => _cpu.AddWeight(x, w);
        public void QuickGelu(Tensor x) => _cpu.QuickGelu(x);
        public void Gelu(Tensor x) => _cpu.Gelu(x);
        public void SiluMul(Tensor gate, Tensor up, Tensor y) => _cpu.SiluMul(gate, up, y);
        public void Rope(Tensor x, int heads, int headDim, ReadOnlySpan<int> positions, float theta) => _cpu.Rope(x, heads, headDim, positions, theta);
        public void Attention(Tensor q, int qHeads, Tensor k, Tensor v, int kvHeads, int headDim, AttentionMask mask, Tensor output) =>
            _cpu.Attention(q, qHeads, k, v, kvHeads, headDim, mask, output);
        public KvCache CreateKvCache(int layers, int kvDim) => _cpu.CreateKvCache(layers, kvDim);
        public void Dispose() => _cpu.Dispose();
    }

    [Fact]
    public void ASecondStepWhileOneRunsThrowsAtOnce()
    {
        using var backend = new GatedBackend();
        using var model = LlavaModel.Load(TestModels.Tiny(), backend);
        using var session = model.CreateSession();
        var ids = TestModels.PromptIds(model.Config, 1, images: 0);
        using var reference = model.CreateSession();
        var expected = reference.Prefill(PromptInput.TextOnly(ids)).Logits.Values;

        backend.Arm();
        StepResult? result = null;
        Exception? failure = null;
        var running = new Thread(() =>
        {
            try { result = session.Prefill(PromptInput.TextOnly(ids)); }
            catch (Exception x) { failure = x; }
        });
        running.Start();
        backend.WaitEntered();
        var e = Assert.Throws<InvalidOperationException>(() => session.Prefill(PromptInput.TextOnly(ids)));
        Assert.Contains("InferenceSession.Prefill was called while another step of the same session is running", e.Message);
        Assert.Throws<InvalidOperationException>(() => session.Decode(ids[0]));
        Assert.Throws<InvalidOperationException>(() => session.Reset());
        Assert.Contains("InferenceSession.Truncate was called while", Assert.Throws<InvalidOperationException>(() => session.Truncate(0)).Message);
        backend.Release();
        running.Join();
        Assert.Null(failure);

        Assert.Equal(expected, result!.Logits.Values);        // the step that ran is intact
        Assert.Equal(ids.Length, session.Position);
        session.Decode(ids[0]);                                // and the session is usable again
        Assert.Equal(ids.Length + 1, session.Position);
    }

    [Fact]
    public void SessionsOfOneModelRunConcurrentlyOnTheCpu()
    {
        using var model = LlavaModel.Load(TestModels.Tiny(), new CpuBackend());
        var prompts = Enumerable.Range(0, 4).Select(seed => TestModels.PromptIds(model.Config, seed, images: 0)).ToArray();

        int[] Greedy(int[] prompt)
        {
            using var s = model.CreateSession();
            var tokens = new List<int>();
            var logits = s.Prefill(PromptInput.TextOnly(prompt)).Logits;
            for (int i = 0; i < 12; i++)
            {
                int next = ArgMax(logits.Last);
                tokens.Add(next);
                logits = s.Decode(next).Logits;
            }
            return [.. tokens];
        }

        var sequential = prompts.Select(Greedy).ToArray();
        for (int trial = 0; trial < 3; trial++)
        {
            var results = new int[prompts.Length][];
            var threads = Enumerable.Range(0, prompts.Length).Select(i => new Thread(() => results[i] = Greedy(prompts[i]))).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            for (int i = 0; i < prompts.Length; i++) Assert.Equal(sequential[i], results[i]);
        }
    }

    private static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}
