// The row-major → column-major mapping of y[m, n] = x[m, k] · W[n, k]ᵀ onto cuBLASLt's operands, checked
// by evaluating a column-major GEMM with exactly those layouts on the host against the row-major product,
// and the pointer-alignment rule used to tell cuBLASLt what a (possibly sliced) tensor guarantees.
using Xunit;

namespace VteKernels.Cuda.Tests;

public sealed class GemmMappingTests
{
    /// <summary>D = op(A) · op(B) for column-major layouts (rows, cols, ld), as cuBLASLt defines it.</summary>
    private static double[] ColumnMajorGemm(float[] a, float[] b, GemmMapping m, int k)
    {
        long outRows = m.DRows, outCols = m.DCols;
        var d = new double[m.DLd * outCols];
        for (long j = 0; j < outCols; j++)
            for (long i = 0; i < outRows; i++)
            {
                double s = 0;
                for (long p = 0; p < k; p++)
                {
                    double av = m.TransA == 1 ? a[p + i * m.ALd] : a[i + p * m.ALd];
                    double bv = m.TransB == 1 ? b[j + p * m.BLd] : b[p + j * m.BLd];
                    s += av * bv;
                }
                d[i + j * m.DLd] = s;
            }
        return d;
    }

    [Theory]
    [InlineData(1, 7, 33)]
    [InlineData(7, 33, 1)]
    [InlineData(5, 3, 4)]
    [InlineData(33, 17, 9)]
    public void ColumnMajorViewComputesTheRowMajorLinear(int m, int n, int k)
    {
        var rng = new Random(m * 1000 + n * 10 + k);
        var x = Enumerable.Range(0, m * k).Select(_ => rng.NextSingle() - 0.5f).ToArray(); // row-major [m, k]
        var w = Enumerable.Range(0, n * k).Select(_ => rng.NextSingle() - 0.5f).ToArray(); // row-major [n, k]
        var map = GemmMapping.ForLinear(m, n, k);
        Assert.Equal((k, n, k), (map.ARows, map.ACols, map.ALd));
        Assert.Equal((k, m, k), (map.BRows, map.BCols, map.BLd));
        Assert.Equal((n, m, n), (map.DRows, map.DCols, map.DLd));

        var d = ColumnMajorGemm(w, x, map, k); // A = W, B = x, exactly as CublasLtGemm passes them
        for (int r = 0; r < m; r++)
            for (int c = 0; c < n; c++)
            {
                double expected = 0;
                for (int p = 0; p < k; p++) expected += (double)x[r * k + p] * w[c * k + p];
                Assert.Equal(expected, d[r * n + c], 1e-9); // D column-major [n, m] is y row-major [m, n]
            }
    }

    [Theory]
    [InlineData(0x7f0000000000ul, 256u)]
    [InlineData(0x7f0000000080ul, 128u)]
    [InlineData(0x7f0000000002ul, 2u)]
    [InlineData(0x7f0000001000ul, 256u)]
    [InlineData(0ul, 256u)]
    public void AlignmentIsTheLargestPowerOfTwoUpTo256(ulong pointer, uint alignment) => Assert.Equal(alignment, CublasLtGemm.Alignment(pointer));
}
