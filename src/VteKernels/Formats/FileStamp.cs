// What identifies the contents of an open file cheaply: its length and modification time as the open handle
// sees them (fstat of the file we mapped, even after its name was moved), and on Linux the device and
// inode of the handle and of the path (a different inode under the path: the file was replaced). Used to
// detect a weight file that changed after it was mapped (see LoadOptions).
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace VteKernels.Formats;

internal readonly record struct FileStamp(long Length, DateTime LastWriteUtc, ulong Device, ulong Inode)
{
    /// <summary>The stamp of an open file.</summary>
    public static FileStamp Of(SafeFileHandle handle)
    {
        var (dev, ino) = Posix.Identity(handle);
        return new FileStamp(RandomAccess.GetLength(handle), File.GetLastWriteTimeUtc(handle), dev, ino);
    }

    /// <summary>What changed from <paramref name="loaded"/> to this stamp of the same open file, or null.</summary>
    public string? DifferenceFrom(FileStamp loaded)
    {
        if (Length != loaded.Length) return $"its size changed from {loaded.Length} to {Length} bytes";
        if (LastWriteUtc != loaded.LastWriteUtc) return $"it was modified (at {LastWriteUtc:O}; loaded as of {loaded.LastWriteUtc:O})";
        return null;
    }

    /// <summary>Whether <paramref name="path"/> still names the file with this stamp's device and inode (true where identities are unknown).</summary>
    public bool SameFileAs(string path)
    {
        if (Inode == 0 || Posix.Identity(path) is not { } now) return true;
        return now == (Device, Inode); // (0, 0): the path names nothing now
    }

    // fstat/stat through libc where it exports them (glibc 2.33+, musl): st_dev and st_ino are the first two
    // 64-bit fields of struct stat on Linux x86-64 and arm64. Elsewhere the identity is unknown (0, 0).
    private static unsafe class Posix
    {
        private static readonly delegate* unmanaged<int, byte*, int> FStat;
        private static readonly delegate* unmanaged<byte*, byte*, int> Stat;

        static Posix()
        {
            if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture is not (Architecture.X64 or Architecture.Arm64)) return;
            foreach (var name in (string[])["libc.so.6", "libc.musl-x86_64.so.1", "libc.musl-aarch64.so.1"])
            {
                if (!NativeLibrary.TryLoad(name, out var lib)) continue;
                if (NativeLibrary.TryGetExport(lib, "fstat", out var f) && NativeLibrary.TryGetExport(lib, "stat", out var s))
                {
                    FStat = (delegate* unmanaged<int, byte*, int>)f;
                    Stat = (delegate* unmanaged<byte*, byte*, int>)s;
                }
                return;
            }
        }

        public static (ulong Device, ulong Inode) Identity(SafeFileHandle handle)
        {
            if (FStat == null) return (0, 0);
            bool added = false;
            try
            {
                handle.DangerousAddRef(ref added);
                byte* buf = stackalloc byte[256];
                return FStat((int)handle.DangerousGetHandle(), buf) == 0 ? (((ulong*)buf)[0], ((ulong*)buf)[1]) : (0, 0);
            }
            finally
            {
                if (added) handle.DangerousRelease();
            }
        }

        public static (ulong Device, ulong Inode)? Identity(string path)
        {
            if (Stat == null) return null;
            byte* buf = stackalloc byte[256];
            byte[] name = System.Text.Encoding.UTF8.GetBytes(path + "\0");
            fixed (byte* p = name)
                return Stat(p, buf) == 0 ? (((ulong*)buf)[0], ((ulong*)buf)[1]) : (0, 0);
        }
    }
}
