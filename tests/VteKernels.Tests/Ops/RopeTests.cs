// CpuOps.Rope against a float64 rotation. The angle convention is part of the contract (Hugging Face
// Llama computes inv_freq and pos · inv_freq in float32, and at position 4000 that rounding moves the angle
// by up to ~2.4e-4 rad), so the reference forms the angle the same way and does everything after it in
// double; a second test checks at small positions, where float32 angle rounding is negligible, against
// angles computed entirely in double, so the convention itself is also checked against the mathematics.
using VteKernels.Backends.Cpu;
using Xunit;

namespace VteKernels.Tests.Ops;

public class RopeTests
{
    public static TheoryData<int, int, int, string, float, int> Cases()
    {
        var data = new TheoryData<int, int, int, string, float, int>();
        (int N, int Heads, int HeadDim)[] shapes = [(1, 1, 2), (3, 2, 6), (7, 3, 34), (33, 4, 128), (577, 8, 64)];
        int seed = 1;
        foreach (var (n, heads, headDim) in shapes)
            foreach (var positions in new[] { "from0", "from4000", "gaps" })
                foreach (var theta in new[] { 10000f, 1e6f })
                    data.Add(n, heads, headDim, positions, theta, seed++);
        return data;
    }

    private static int[] Positions(string kind, int n, int seed) => kind switch
    {
        "from0" => Enumerable.Range(0, n).ToArray(),
        "from4000" => Enumerable.Range(4000, n).ToArray(),
        "gaps" => GappedPositions(n, seed),
        _ => throw new ArgumentException(kind),
    };

    private static int[] GappedPositions(int n, int seed)
    {
        var rng = new Random(seed);
        var p = new int[n];
        int next = rng.Next(0, 50);
        for (int i = 0; i < n; i++)
        {
            p[i] = next;
            next += 1 + (rng.Next(4) == 0 ? rng.Next(2, 300) : 0);
        }
        return p;
    }

    private static double[] Reference(float[] x, int n, int heads, int headDim, int[] positions, Func<int, int, double> angle)
    {
        int half = headDim / 2;
        var expected = new double[x.Length];
        for (int t = 0; t < n; t++)
            for (int h = 0; h < heads; h++)
            {
                int b = (t * heads + h) * headDim;
                for (int i = 0; i < half; i++)
                {
                    double a = angle(positions[t], i), c = Math.Cos(a), s = Math.Sin(a);
                    double x1 = x[b + i], x2 = x[b + half + i];
                    expected[b + i] = x1 * c - x2 * s;
                    expected[b + half + i] = x2 * c + x1 * s;
                }
            }
        return expected;
    }

    [Theory, MemberData(nameof(Cases))]
    public void MatchesFloat64RotationWithHfFloat32Angles(int n, int heads, int headDim, string positionKind, float theta, int seed)
    {
        var positions = Positions(positionKind, n, seed);
        var x = OpsTestData.RandomFloats(n * heads * headDim, seed, scale: 2f);
        // HF: inv_freq = 1 / theta^(arange(0, d, 2) / d) and freqs = inv_freq · pos, both float32.
        double Angle(int pos, int i) => (1f / MathF.Pow(theta, (2 * i) / (float)headDim)) * (float)pos;
        var expected = Reference(x, n, heads, headDim, positions, Angle);

        CpuOps.Rope(x, n, heads, headDim, positions, theta);

        // Only cos/sin rounding (float results of double evaluations) and the float products remain:
        // measured max |error| 3.0e-7 for inputs of magnitude <= 2.
        Tolerance.AssertClose(x, expected, atol: 1e-6, rtol: 1e-6,
            $"Rope n={n} heads={heads} headDim={headDim} positions={positionKind} theta={theta} seed={seed}");
    }

    [Theory]
    [InlineData(64, 2, 128, 10000f, 1)]
    [InlineData(40, 3, 34, 10000f, 2)]
    [InlineData(16, 1, 2, 500000f, 3)]
    public void MatchesDoubleAnglesAtSmallPositions(int n, int heads, int headDim, float theta, int seed)
    {
        var positions = Enumerable.Range(0, n).ToArray();
        var x = OpsTestData.RandomFloats(n * heads * headDim, seed, scale: 2f);
        double Angle(int pos, int i) => pos * Math.Pow(theta, -2.0 * i / headDim);
        var expected = Reference(x, n, heads, headDim, positions, Angle);

        CpuOps.Rope(x, n, heads, headDim, positions, theta);

        // float32 angles are off by <= ~pos · 6e-8 rad here (pos < 64); measured max |error| 6.0e-6.
        Tolerance.AssertClose(x, expected, atol: 2e-5, rtol: 0, $"Rope double angles n={n} headDim={headDim} theta={theta}");
    }

    [Fact]
    public void PositionZeroIsIdentity()
    {
        var x = OpsTestData.RandomFloats(2 * 3 * 8, 9);
        var before = Array.ConvertAll(x, v => (double)v);
        CpuOps.Rope(x, 2, 3, 8, [0, 0], 10000f);
        Tolerance.AssertClose(x, before, 0, 0, "Rope at position 0");
    }

    [Fact]
    public void RejectsOddHeadDimAndBadLengths()
    {
        Assert.Equal("headDim", Assert.Throws<ArgumentException>(() => CpuOps.Rope(new float[3], 1, 1, 3, [0], 10000f)).ParamName);
        Assert.Equal("x", Assert.Throws<ArgumentException>(() => CpuOps.Rope(new float[7], 1, 1, 8, [0], 10000f)).ParamName);
        Assert.Equal("positions", Assert.Throws<ArgumentException>(() => CpuOps.Rope(new float[16], 2, 1, 8, [0], 10000f)).ParamName);
        Assert.Equal("theta", Assert.ThrowsAny<ArgumentException>(() => CpuOps.Rope(new float[8], 1, 1, 8, [0], 0f)).ParamName);
    }
}
