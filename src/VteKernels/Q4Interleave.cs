// Q4_0 rows interleaved by eights: the CPU decode kernel's layout (CpuWeights.Interleave makes it at upload).
//
// Rows go in groups of eight; a group keeps the 8 · blocks · 18 bytes its rows take in ggml's layout, so every
// group and the rows after the last whole group (stored as ggml stores them) stay where they were. Within a
// group, per block of 32 columns, 144 bytes:
//
//   bytes   0..15   the eight rows' f16 scales, row 0 first
//   bytes  16..143  four chunks of 32 bytes; chunk c holds bytes 4c..4c+3 of each row's 16 nibble bytes,
//                   row 0 first (so row l's low nibbles there are elements 4c..4c+3, its high ones 16+4c..19+4c)
//
// One 32-bit lane of a chunk is then one row, and a broadcast of four x values multiplies all eight rows at
// once: per block and group the kernel's int16 sums stay per row, and one scale per row and block is applied
// to a vector of eight rows instead of one row at a time.
namespace VteKernels;

/// <summary>The eight-row interleaved Q4_0 layout (<see cref="Weight.Interleaved8"/>).</summary>
internal static unsafe class Q4Interleave
{
    /// <summary>Rows per group.</summary>
    public const int GroupRows = 8;

    /// <summary>Bytes of one block of a group (eight rows' scales and nibbles).</summary>
    public const int GroupBlockBytes = GroupRows * BlockQuant.Q4_0BlockBytes;

    /// <summary>Rows that lie in whole groups (the rest are stored as ggml stores them).</summary>
    public static int GroupedRows(int rows) => rows / GroupRows * GroupRows;

    /// <summary>
    /// One group's eight rows of <paramref name="blocks"/> Q4_0 blocks each, from ggml's layout at
    /// <paramref name="src"/> into the interleaved one at <paramref name="dst"/> (distinct buffers of 144 · blocks bytes).
    /// </summary>
    public static void InterleaveGroup(byte* src, byte* dst, int blocks)
    {
        long rowBytes = (long)blocks * BlockQuant.Q4_0BlockBytes;
        for (int b = 0; b < blocks; b++)
        {
            byte* to = dst + (long)b * GroupBlockBytes;
            for (int l = 0; l < GroupRows; l++)
            {
                byte* from = src + l * rowBytes + (long)b * BlockQuant.Q4_0BlockBytes;
                ((ushort*)to)[l] = *(ushort*)from;
                for (int c = 0; c < 4; c++) ((uint*)(to + 16 + 32 * c))[l] = ((uint*)(from + 2))[c];
            }
        }
    }

    /// <summary>
    /// Blocks [b0, b0 + count) of row <paramref name="row"/> of an interleaved weight at <paramref name="data"/>
    /// (<paramref name="blocks"/> per row) in ggml's layout at <paramref name="plain"/> (18 bytes a block).
    /// </summary>
    public static void RowBlocks(byte* data, int row, int blocks, int b0, int count, byte* plain)
    {
        int l = row % GroupRows;
        byte* group = data + (long)(row - l) * blocks * BlockQuant.Q4_0BlockBytes;
        for (int b = 0; b < count; b++)
        {
            byte* from = group + (long)(b0 + b) * GroupBlockBytes;
            byte* to = plain + b * BlockQuant.Q4_0BlockBytes;
            *(ushort*)to = ((ushort*)from)[l];
            for (int c = 0; c < 4; c++) ((uint*)(to + 2))[c] = ((uint*)(from + 16 + 32 * c))[l];
        }
    }
}
