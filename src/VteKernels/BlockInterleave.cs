// Q8_0 and Q4_0 rows interleaved by sixteens: the CPU decode kernels' layout (CpuWeights.Interleave makes it at
// upload).
//
// Rows go in groups of sixteen; a group keeps the 16 · blocks · blockBytes bytes its rows take in ggml's layout,
// so every group and the rows after the last whole group (stored as ggml stores them) stay where they were.
// Within a group, per block of 32 columns (16 · 34 = 544 bytes for Q8_0, 16 · 18 = 288 for Q4_0):
//
//   bytes 0..31     the sixteen rows' f16 scales, row 0 first
//   then chunks of 64 bytes (eight for Q8_0, four for Q4_0): chunk c holds bytes 4c..4c+3 of each row's
//   block data after its scale, row 0 first. Q8_0: row l's elements 4c..4c+3. Q4_0: row l's low nibbles
//   are elements 4c..4c+3, its high ones 16+4c..19+4c.
//
// One 32-bit lane of a chunk is then one row, and a broadcast of four x values multiplies all sixteen rows at
// once (one 512-bit register; without AVX-512 the two 32-byte halves of a chunk, rows 0..7 and 8..15, go as
// two 256-bit ones): per block and group the kernel's sums stay per row, and one scale per row and block is
// applied to a vector of rows instead of one row at a time.
namespace VteKernels;

/// <summary>The sixteen-row interleaved layout of Q8_0 and Q4_0 weights (<see cref="Weight.Interleaved"/>).</summary>
internal static unsafe class BlockInterleave
{
    /// <summary>Rows per group.</summary>
    public const int GroupRows = 16;

    /// <summary>Bytes of the sixteen scales that start a group's block.</summary>
    public const int ScaleBytes = 2 * GroupRows;

    /// <summary>Bytes of one chunk: four bytes of each row.</summary>
    public const int ChunkBytes = 4 * GroupRows;

    /// <summary>Rows that lie in whole groups (the rest are stored as ggml stores them).</summary>
    public static int GroupedRows(int rows) => rows / GroupRows * GroupRows;

    /// <summary>
    /// One group's sixteen rows of <paramref name="blocks"/> blocks of <paramref name="blockBytes"/> each, from
    /// ggml's layout at <paramref name="src"/> into the interleaved one at <paramref name="dst"/> (distinct buffers).
    /// </summary>
    public static void InterleaveGroup(byte* src, byte* dst, int blocks, int blockBytes)
    {
        long rowBytes = (long)blocks * blockBytes;
        int chunks = (blockBytes - 2) / 4;
        for (int b = 0; b < blocks; b++)
        {
            byte* to = dst + (long)b * GroupRows * blockBytes;
            for (int l = 0; l < GroupRows; l++)
            {
                byte* from = src + l * rowBytes + (long)b * blockBytes;
                ((ushort*)to)[l] = *(ushort*)from;
                for (int c = 0; c < chunks; c++) ((uint*)(to + ScaleBytes + ChunkBytes * c))[l] = ((uint*)(from + 2))[c];
            }
        }
    }

    /// <summary>
    /// Blocks [b0, b0 + count) of row <paramref name="row"/> of an interleaved weight at <paramref name="data"/>
    /// (<paramref name="blocks"/> per row of <paramref name="blockBytes"/>) in ggml's layout at <paramref name="plain"/>.
    /// </summary>
    public static void RowBlocks(byte* data, int row, int blocks, int blockBytes, int b0, int count, byte* plain)
    {
        int l = row % GroupRows, chunks = (blockBytes - 2) / 4;
        byte* group = data + (long)(row - l) * blocks * blockBytes;
        for (int b = 0; b < count; b++)
        {
            byte* from = group + (long)(b0 + b) * GroupRows * blockBytes;
            byte* to = plain + b * blockBytes;
            *(ushort*)to = ((ushort*)from)[l];
            for (int c = 0; c < chunks; c++) ((uint*)(to + 2))[c] = ((uint*)(from + ScaleBytes + ChunkBytes * c))[l];
        }
    }
}
