// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
// counter-based generator the sampling kernel uses, mirrored on the host so tests can check the kernel's
// draws and predict them. Checked against Random123's published known-answer vectors.
namespace VteKernels.Cuda.Kernels;

/// <summary>The sampler's random numbers, as kernels/sample.cu computes them.</summary>
public static class Philox
{
    /// <summary>Philox4x32-10 of counter (c0..c3) under key (k0, k1).</summary>
    public static (uint X0, uint X1, uint X2, uint X3) Philox4x32_10(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        for (int round = 0; round < 10; round++)
        {
            if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
            ulong p0 = 0xD2511F53ul * c0, p1 = 0xCD9E8D57ul * c2;
            uint hi0 = (uint)(p0 >> 32), lo0 = (uint)p0, hi1 = (uint)(p1 >> 32), lo1 = (uint)p1;
            (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
        }
        return (c0, c1, c2, c3);
    }

    /// <summary>
    /// The uniform in [0, 1) that sampling row <paramref name="row"/> of draw <paramref name="offset"/> uses:
    /// counter (offset low, offset high, row, 0), key (seed low, seed high), 53 bits from the first two words.
    /// </summary>
    public static double SampleUniform(ulong seed, ulong offset, int row)
    {
        var (x0, x1, _, _) = Philox4x32_10((uint)offset, (uint)(offset >> 32), (uint)row, 0u, (uint)seed, (uint)(seed >> 32));
        ulong a = x0 >> 5, b = x1 >> 6;
        return (a * 67108864ul + b) * (1.0 / 9007199254740992.0);
    }
}
