// What the CPU backend can do to a matrix when it is uploaded (CpuBackendOptions):
//
// * Quantize it to Q8_0 or Q4_0 (ggml's blocks, BlockQuant.cs), row by row on all cores. The result lives in
//   process memory; the file's 16-bit weights are no longer read.
// * Copy it into memory backed by transparent huge pages (2 MiB, asked for with madvise on Linux). Decode
//   reads every weight once per token; out of a memory-mapped file (4 KiB pages) the page walks of this
//   VM's nested paging cap the read bandwidth well below what the memory gives: measured on the 2-core
//   development VM, 8 streams a thread read ~17 GB/s from a mapped file against ~25-35 GB/s from huge pages
//   (cpu-e2e prints both). The copy costs the weights' size in memory (the page cache of the file can be
//   dropped by the kernel) and a pass over them at load.
//
// * Interleave a Q8_0 or Q4_0 matrix's rows by sixteens (BlockInterleave.cs) where the int8 decode kernels run
//   (AVX2): the decode kernels then multiply sixteen rows per instruction (eight with 256-bit registers) instead
//   of one (Q4_0 ~2.5x fewer instructions per weight at eight rows, measured in L2 on AMD Zen 4). A quantized matrix is interleaved where it lies; one from a file
//   is copied (into huge pages, as above).
//
// All land in a pinned managed array, which the returned Weight keeps alive: the memory goes back when the
// model and backend are dropped, as memory-mapped weights do.
using System.Runtime.InteropServices;

namespace VteKernels.Backends.Cpu;

internal static unsafe partial class CpuWeights
{
    private const int HugePage = 1 << 21;
    private const int MadvHugepage = 14;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int madvise(nint addr, nuint length, int advice);

    /// <summary>True when a weight of this shape and type can be quantized to a block format.</summary>
    public static bool CanQuantize(Weight w) =>
        w.Shape.Count == 2 && w.Cols % BlockQuant.BlockElements == 0 && w.Cols > 0 && w.DType is DType.F32 or DType.F16 or DType.BF16;

    /// <summary><paramref name="w"/> quantized to <paramref name="type"/> (Q8_0 or Q4_0), row by row on <paramref name="threads"/> threads.</summary>
    /// <exception cref="ArgumentException">A value is not finite or a block's scale overflows f16.</exception>
    public static Weight Quantize(Weight w, DType type, int threads)
    {
        long rowBytes = type.ByteCount(w.Cols);
        var (array, dst) = Allocate(rowBytes * w.Rows);
        QuantizeRows(w, 0, w.Rows, type, new Span<byte>((byte*)dst, checked((int)(rowBytes * w.Rows))), threads);
        return new Weight(w.Name, type, [.. w.Shape], (byte*)dst, array);
    }

    /// <summary>Rows [r0, r0 + rows) of <paramref name="w"/> quantized into <paramref name="dst"/>, on <paramref name="threads"/> threads.</summary>
    /// <exception cref="ArgumentException">A value is not finite, a block's scale overflows f16, or dst is too short.</exception>
    public static void QuantizeRows(Weight w, int r0, int rows, DType type, Span<byte> dst, int threads)
    {
        long rowBytes = type.ByteCount(w.Cols);
        if (dst.Length < rowBytes * rows) throw new ArgumentException($"{rows} rows of {type} take {rowBytes * rows} bytes, got {dst.Length}", nameof(dst));
        int cols = w.Cols;
        fixed (byte* pd = dst)
        {
            nint d = (nint)pd;
            CpuWorkers.For(rows, threads, (r, _) =>
            {
                var row = new float[cols];
                fixed (float* pr = row) CpuOps.WidenRow(w, r0 + r, 0, cols, pr);
                BlockQuant.Quantize(row, type, new Span<byte>((byte*)d + r * rowBytes, checked((int)rowBytes)));
            });
        }
    }

    /// <summary>True when <paramref name="w"/> is a Q8_0 or Q4_0 matrix the decode kernels read faster interleaved, and it fits one array.</summary>
    public static bool CanInterleave(Weight w) =>
        w.DType.IsBlockQuantized() && w.Shape.Count == 2 && !w.Interleaved && w.Rows >= BlockInterleave.GroupRows && CpuOps.Int8DotSupported &&
        w.ByteLength <= int.MaxValue - 2L * HugePage;

    /// <summary>
    /// <paramref name="w"/> (Q8_0 or Q4_0) with its rows interleaved by sixteens: in place when <paramref name="inPlace"/>
    /// (a weight this backend made), otherwise a copy in huge-page memory.
    /// </summary>
    public static Weight Interleave(Weight w, bool inPlace, int threads)
    {
        if (!CanInterleave(w)) throw new ArgumentException($"'{w.Name}' ({w.DType} [{string.Join(", ", w.Shape)}]) cannot be interleaved", nameof(w));
        byte[]? array = null;
        nint dst = (nint)w.Pointer, src = dst;
        if (!inPlace) (array, dst) = Allocate(w.ByteLength);
        int blocks = w.Cols / BlockQuant.BlockElements, groups = w.Rows / BlockInterleave.GroupRows, blockBytes = BlockQuant.BlockBytes(w.DType);
        long groupBytes = (long)blocks * BlockInterleave.GroupRows * blockBytes;
        CpuWorkers.For(groups, threads, (g, _) =>
        {
            byte* from = (byte*)src + g * groupBytes, to = (byte*)dst + g * groupBytes;
            if (!inPlace)
            {
                BlockInterleave.InterleaveGroup(from, to, blocks, blockBytes);
                return;
            }
            // In place: the group is read from a copy of itself.
            var copy = System.Buffers.ArrayPool<byte>.Shared.Rent(checked((int)groupBytes));
            try
            {
                fixed (byte* c = copy)
                {
                    Buffer.MemoryCopy(from, c, groupBytes, groupBytes);
                    BlockInterleave.InterleaveGroup(c, to, blocks, blockBytes);
                }
            }
            finally { System.Buffers.ArrayPool<byte>.Shared.Return(copy); }
        });
        long tail = w.ByteLength - groups * groupBytes;
        if (!inPlace) Buffer.MemoryCopy(w.Pointer + groups * groupBytes, (byte*)dst + groups * groupBytes, tail, tail);
        return new Weight(w.Name, w.DType, [.. w.Shape], (byte*)dst, inPlace ? w.PinnedArray : array, interleaved: true);
    }

    /// <summary>A copy of <paramref name="w"/> in huge-page memory, or <paramref name="w"/> itself when it is too large for one array.</summary>
    public static Weight CopyToHugePages(Weight w, int threads)
    {
        long bytes = w.ByteLength;
        if (bytes > int.MaxValue - 2L * HugePage) return w;
        var (array, dst) = Allocate(bytes);
        const long Chunk = 1 << 24;
        nint src = (nint)w.Pointer;
        CpuWorkers.For((int)((bytes + Chunk - 1) / Chunk), threads, (c, _) =>
        {
            long at = c * Chunk, n = Math.Min(Chunk, bytes - at);
            Buffer.MemoryCopy((byte*)src + at, (byte*)dst + at, n, n);
        });
        return new Weight(w.Name, w.DType, [.. w.Shape], (byte*)dst, array, w.Interleaved);
    }

    /// <summary>A pinned array with a 2 MiB-aligned region of <paramref name="bytes"/> in it, marked for huge pages before first touch.</summary>
    private static (byte[] Array, nint Data) Allocate(long bytes)
    {
        var array = GC.AllocateUninitializedArray<byte>(checked((int)(bytes + HugePage)), pinned: true);
        byte* start = (byte*)Marshal.UnsafeAddrOfPinnedArrayElement(array, 0);
        byte* data = (byte*)(((nint)start + HugePage - 1) & ~(nint)(HugePage - 1));
        if (OperatingSystem.IsLinux() && bytes >= HugePage)
            _ = madvise((nint)data, (nuint)(bytes / HugePage * HugePage), MadvHugepage);   // advice only: failure leaves 4 KiB pages
        return (array, (nint)data);
    }
}
