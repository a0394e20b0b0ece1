// GPT-2's byte-to-unicode map, used by byte-level BPE (GPT-2, LLaMA-3, Qwen): every byte gets a printable
// character so that vocabulary entries are plain strings. Printable Latin-1 bytes ('!'..'~', '¡'..'¬',
// '®'..'ÿ') map to themselves; the other 68 bytes map to U+0100.. in byte order (space -> 'Ġ', \n -> 'Ċ').
namespace VteKernels.Text;

/// <summary>The byte-level alphabet: byte &lt;-&gt; character.</summary>
internal static class ByteLevelAlphabet
{
    /// <summary>The character standing for each byte.</summary>
    public static readonly char[] ByteToChar = Build();

    /// <summary>The byte each alphabet character stands for, or -1 (indexed by char, up to U+0143).</summary>
    public static readonly short[] CharToByte = Invert(ByteToChar);

    private static char[] Build()
    {
        var map = new char[256];
        var used = new bool[256];
        for (int b = '!'; b <= '~'; b++) used[b] = true;
        for (int b = 0xA1; b <= 0xAC; b++) used[b] = true;
        for (int b = 0xAE; b <= 0xFF; b++) used[b] = true;
        int n = 0;
        for (int b = 0; b < 256; b++) map[b] = used[b] ? (char)b : (char)(256 + n++);
        return map;
    }

    private static short[] Invert(char[] map)
    {
        var inv = new short[512];
        Array.Fill(inv, (short)-1);
        for (int b = 0; b < 256; b++) inv[map[b]] = (short)b;
        return inv;
    }

    /// <summary>The byte <paramref name="c"/> stands for, or -1 when it is not in the alphabet.</summary>
    public static int ByteOf(char c) => c < CharToByte.Length ? CharToByte[c] : -1;
}
