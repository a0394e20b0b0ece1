// Deterministic structure-blind mutations for the campaign: input i of a target under seed S is a pure
// function of (S, target, i), so any input can be rebuilt from its number alone and a campaign restarted
// at any index gives the same inputs. Mutations stack 1..8 deep on one seed; besides byte flips and range
// edits they insert dictionary tokens (a target's syntax), repeat a token or a range up to 10,000 times
// (nesting and repetition bombs), replace digit runs and binary integers by boundary values, and splice
// two seeds.
using System.Buffers.Binary;
using System.Text;

namespace VteKernels.Fuzz;

internal sealed class Mutator(IReadOnlyList<byte[]> seeds, IReadOnlyList<byte[]> dictionary, int maxBytes)
{
    private static readonly string[] Numbers =
    [
        "0", "-0", "1", "-1", "2", "3", "7", "8", "255", "256", "65535", "65536", "10000", "1000000", "16777215", "16777216",
        "2147483647", "2147483648", "-2147483648", "4294967295", "4294967296", "9223372036854775807", "9223372036854775808",
        "-9223372036854775809", "99999999999999999999999", "1e308", "1e309", "-1e308", "1e-308", "1e-400", "0.5", "-0.0",
        "3.4028235e38", "3.5e38", "1.5", "NaN", "Infinity", "1e9", "100000000",
    ];

    private static readonly long[] Integers =
    [
        0, 1, -1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 10000, 1_000_000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
        0x100000000, long.MaxValue, long.MinValue,
    ];

    private static readonly int[] RepeatCounts = [2, 3, 4, 8, 16, 100, 300, 1000, 3000, 10000];

    public byte[] Make(ulong seed, string target, long index)
    {
        var rng = new Random(unchecked((int)Hash(seed, target, index)));
        var data = new List<byte>(seeds[rng.Next(seeds.Count)]);
        if (index == 0) return Clamp(data); // the first input of every run is a seed as it is
        int depth = rng.Next(10) == 0 ? 8 : 1 + rng.Next(4);
        for (int k = 0; k < depth; k++) Mutate(data, rng);
        return Clamp(data);
    }

    private byte[] Clamp(List<byte> data) => data.Count > maxBytes ? data.GetRange(0, maxBytes).ToArray() : data.ToArray();

    private void Mutate(List<byte> d, Random rng)
    {
        int Pos(bool end = false) => d.Count == 0 ? 0 : rng.Next(d.Count + (end ? 1 : 0));
        byte[] Token() => dictionary.Count > 0 && rng.Next(4) != 0 ? dictionary[rng.Next(dictionary.Count)] : RandomRange(d, rng);
        switch (rng.Next(14))
        {
            case 0 when d.Count > 0:
                d[Pos()] ^= (byte)(1 << rng.Next(8));
                break;
            case 1 when d.Count > 0:
                d[Pos()] = (byte)rng.Next(256);
                break;
            case 2 when d.Count > 0:
                d[Pos()] = (byte)"\0\xff\x7f\x80{}[]()\"'\\,:.-0123456789%#|"[rng.Next(26)];
                break;
            case 3:
                var bytes = new byte[1 + rng.Next(16)];
                rng.NextBytes(bytes);
                d.InsertRange(Pos(true), bytes);
                break;
            case 4 when d.Count > 1:
            {
                int at = Pos(), n = 1 + rng.Next(Math.Min(64, d.Count - at));
                d.RemoveRange(at, Math.Min(n, d.Count - at));
                break;
            }
            case 5:
                d.InsertRange(Pos(true), RandomRange(d, rng));
                break;
            case 6 or 7:
                d.InsertRange(Pos(true), Token());
                break;
            case 8 when d.Count > 0:
            {
                var t = Token();
                int at = Pos();
                for (int i = 0; i < t.Length && at + i < d.Count; i++) d[at + i] = t[i];
                break;
            }
            case 9:
            {
                var t = Token();
                int n = RepeatCounts[rng.Next(RepeatCounts.Length)];
                n = Math.Max(1, Math.Min(n, (maxBytes - d.Count) / Math.Max(1, t.Length)));
                var run = new List<byte>(t.Length * n);
                for (int i = 0; i < n; i++) run.AddRange(t);
                d.InsertRange(Pos(true), run);
                break;
            }
            case 10:
                ReplaceNumber(d, rng);
                break;
            case 11 when d.Count >= 8:
            {
                int at = rng.Next(d.Count - 7);
                long v = Integers[rng.Next(Integers.Length)];
                var span = new byte[8];
                switch (rng.Next(4))
                {
                    case 0: BinaryPrimitives.WriteInt32LittleEndian(span, unchecked((int)v)); d.RemoveRange(at, 4); d.InsertRange(at, span[..4]); break;
                    case 1: BinaryPrimitives.WriteInt32BigEndian(span, unchecked((int)v)); d.RemoveRange(at, 4); d.InsertRange(at, span[..4]); break;
                    case 2: BinaryPrimitives.WriteInt16BigEndian(span, unchecked((short)v)); d.RemoveRange(at, 2); d.InsertRange(at, span[..2]); break;
                    default: BinaryPrimitives.WriteInt64LittleEndian(span, v); d.RemoveRange(at, 8); d.InsertRange(at, span); break;
                }
                break;
            }
            case 12:
            {
                var other = seeds[rng.Next(seeds.Count)];
                int keep = Pos(true), from = other.Length == 0 ? 0 : rng.Next(other.Length);
                d.RemoveRange(keep, d.Count - keep);
                d.AddRange(other.AsSpan(from).ToArray());
                break;
            }
            case 13 when d.Count > 0:
            {
                int at = Pos();
                d.RemoveRange(at, d.Count - at);
                break;
            }
            default:
                if (d.Count > 0) d[Pos()] ^= 0xFF;
                break;
        }
    }

    private static byte[] RandomRange(List<byte> d, Random rng)
    {
        if (d.Count == 0) return [(byte)rng.Next(256)];
        int at = rng.Next(d.Count), n = 1 + rng.Next(Math.Min(32, d.Count - at));
        return d.GetRange(at, n).ToArray();
    }

    // A run of ASCII digits (with sign, point and exponent) becomes a boundary value.
    private static void ReplaceNumber(List<byte> d, Random rng)
    {
        var starts = new List<int>();
        for (int i = 0; i < d.Count; i++)
            if (char.IsAsciiDigit((char)d[i]) && (i == 0 || !char.IsAsciiDigit((char)d[i - 1]))) starts.Add(i);
        var value = Encoding.ASCII.GetBytes(Numbers[rng.Next(Numbers.Length)]);
        if (starts.Count == 0)
        {
            d.InsertRange(rng.Next(d.Count + 1), value);
            return;
        }
        int s = starts[rng.Next(starts.Count)], e = s;
        while (e < d.Count && (char.IsAsciiDigit((char)d[e]) || d[e] is (byte)'.' or (byte)'e' or (byte)'E' or (byte)'-' or (byte)'+')) e++;
        d.RemoveRange(s, e - s);
        d.InsertRange(s, value);
    }

    private static ulong Hash(ulong seed, string target, long index)
    {
        ulong h = 14695981039346656037UL ^ seed;
        foreach (char c in target) h = (h ^ c) * 1099511628211UL;
        h = (h ^ (ulong)index) * 1099511628211UL;
        h ^= h >> 29;
        h *= 0xBF58476D1CE4E5B9UL;
        return h ^ (h >> 32);
    }

    /// <summary>Reads an AFL/libFuzzer dictionary: lines <c>name="value"</c> with \\, \" and \xNN escapes; # starts a comment.</summary>
    public static List<byte[]> ReadDictionary(string path)
    {
        var tokens = new List<byte[]>();
        foreach (var raw in File.ReadAllLines(path))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] == '#') continue;
            int q = line.IndexOf('"');
            if (q < 0 || !line.EndsWith('"') || line.Length - q < 2) throw new FormatException($"{path}: bad dictionary line '{raw}'");
            var body = line[(q + 1)..^1];
            var bytes = new List<byte>();
            for (int i = 0; i < body.Length; i++)
            {
                if (body[i] != '\\') { bytes.AddRange(Encoding.UTF8.GetBytes(body[i].ToString())); continue; }
                char e = body[++i];
                if (e == 'x') { bytes.Add(Convert.ToByte(body.Substring(i + 1, 2), 16)); i += 2; }
                else bytes.Add((byte)e);
            }
            tokens.Add([.. bytes]);
        }
        return tokens;
    }
}
