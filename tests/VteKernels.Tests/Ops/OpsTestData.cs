// Inputs for the CPU op tests: seeded random values, weights stored in a chosen dtype together with the
// stored values widened to double (so a float64 reference sees exactly what the op reads and differences
// measure only the op's arithmetic), and NaN-poisoned outputs (an element the op forgets to write fails).
namespace VteKernels.Tests.Ops;

internal static class OpsTestData
{
    public static readonly DType[] AllDTypes = [DType.F32, DType.F16, DType.BF16];

    /// <summary>count values uniform in [offset − scale, offset + scale).</summary>
    public static float[] RandomFloats(int count, int seed, float scale = 1f, float offset = 0f)
    {
        var rng = new Random(seed);
        var v = new float[count];
        for (int i = 0; i < count; i++) v[i] = offset + (rng.NextSingle() * 2f - 1f) * scale;
        return v;
    }

    /// <summary>A random weight stored as <paramref name="dtype"/>, and its stored values widened to double.</summary>
    public static (Weight Weight, double[] Stored) RandomWeight(string name, DType dtype, int seed, float scale, float offset, params int[] shape)
    {
        int count = 1;
        foreach (var d in shape) count *= d;
        var w = Weight.FromFloats(name, RandomFloats(count, seed, scale, offset), dtype, shape);
        return (w, Array.ConvertAll(w.ToFloatArray(), f => (double)f));
    }

    public static float[] Poisoned(int count)
    {
        var v = new float[count];
        Array.Fill(v, float.NaN);
        return v;
    }
}
