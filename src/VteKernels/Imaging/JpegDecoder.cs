// JPEG decoder (ITU T.81) for 8-bit Huffman-coded images: baseline and extended sequential (SOF0/SOF1,
// interleaved or one scan per component) and progressive (SOF2: spectral selection and successive
// approximation), 1 (gray), 3 (YCbCr or RGB) or 4 (CMYK or YCCK) components, any integral sampling factors
// (4:4:4, 4:2:2, 4:2:0, 4:1:1, 4:4:0, ...), restart markers. Arithmetic coding, 12-bit, lossless and
// hierarchical JPEG are rejected with a clear message.
// Output matches PIL 9.4 on libjpeg-turbo 2.1 bit for bit: ISLOW IDCT (JpegIdct), fancy upsampling and
// libjpeg's colour tables (JpegColor), the colour space chosen as libjpeg does (JFIF marker -> YCbCr; else
// the Adobe APP14 transform flag; else component ids), CMYK read as PIL does.
// Stricter than libjpeg: where libjpeg warns and pads with zeros (a bad Huffman code, entropy data that ends
// early, a missing or out-of-order restart marker) this decoder throws, and the file must end with EOI.
// Not reproduced: libjpeg's block smoothing, which it applies only to progressive files whose scans leave
// low-frequency coefficients unrefined (never the case for files written by libjpeg or PIL).
// Memory: coefficients for the whole frame (2 bytes per sample), allocated only after the frame size has
// passed DecodeOptions.MaxPixels and the file has been found long enough to hold it: every block costs at
// least one bit of DC data (a Huffman code), so a frame of B blocks needs B/8 bytes after its header, and
// coefficient memory stays under 1024 x the file size. Work: at most MaxScans scans, and the coefficients
// the scans visit (blocks x coefficients in the scan's band) at most MaxPassesPerCoefficient per coefficient
// of the frame, counted before each scan runs: deterministic, whatever the machine, and a file repeating a
// scan over a large frame fails instead of spinning.
using System.Buffers.Binary;

namespace VteKernels.Imaging;

internal sealed class JpegDecoder
{
    private const string Fmt = "JPEG";
    private const int MaxScans = 256; // libjpeg writes ~10, scan optimizers a few dozen; bounds the time a hostile file can cost

    /// <summary>Scans may visit each coefficient of the frame this many times on average (libjpeg's progression
    /// visits each about 3 times; 14 successive-approximation bit planes would be the most a sane file uses).</summary>
    internal const int MaxPassesPerCoefficient = 16;

    // Zigzag position -> natural (row-major) index; 16 extra entries map overruns to 63, as libjpeg's
    // jpeg_natural_order does, so a corrupt run length cannot index outside the block.
    private static readonly byte[] Natural =
    [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
        35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
        63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    ];

    private sealed class Component
    {
        public int Id, H, V, Tq, Index;
        public int CompW, CompH;          // samples in this component (downsampled size)
        public int BlocksW, BlocksH;      // allocated blocks: whole MCUs
        public short[] Coefs = [];
        public short[]? Quant;            // latched at the component's first scan, as libjpeg does
        public int Pred, DcTable, AcTable;
        public int[] CoefBits = [];       // progression state per coefficient (-1 = never coded)
    }

    private sealed class HuffTable
    {
        public readonly ushort[] Fast = new ushort[1 << FastBits]; // (length << 8) | symbol, 0 = longer code
        public readonly int[] MaxCode = new int[18];
        public readonly int[] ValOffset = new int[18];
        public readonly byte[] Values = new byte[256];
        public const int FastBits = 9;
    }

    private readonly byte[] _d;
    private readonly DecodeOptions _options;
    private Component[] _comps = [];
    private bool _frame, _progressive;
    private int _width, _height, _hmax, _vmax, _mcusX, _mcusY;
    private readonly short[]?[] _quant = new short[4][];
    private readonly HuffTable?[] _dcTables = new HuffTable[4], _acTables = new HuffTable[4];
    private int _restartInterval, _scans, _orientation = 1;
    private long _work, _workBudget; // coefficient visits so far, and the most allowed
    private bool _jfif, _adobe, _sawExif;
    private int _adobeTransform;

    // Bit reader over the entropy-coded segment: MSB-first, 0xFF00 unstuffed, stops at a marker.
    private int _pos;
    private ulong _bits;
    private int _bitCount;
    private long _realBits;       // bits in _bits that came from the file; negative = read past the data
    private bool _atMarker;
    private int _eobrun;

    private JpegDecoder(byte[] data, DecodeOptions options)
    {
        _d = data;
        _options = options;
    }

    public static DecodedImage Decode(ReadOnlySpan<byte> data, DecodeOptions options) => new JpegDecoder(data.ToArray(), options).Run();

    private ImageFormatException Error(string problem, long offset = -1) => new(Fmt, problem, offset);

    private DecodedImage Run()
    {
        int pos = 2; // after SOI
        bool sawScan = false;
        while (true)
        {
            int markerAt = pos;
            if (pos >= _d.Length) throw Error("file ends before the EOI marker (truncated)", pos);
            if (_d[pos] != 0xFF) throw Error($"expected a marker, found byte 0x{_d[pos]:X2}", pos);
            while (pos < _d.Length && _d[pos] == 0xFF) pos++; // fill bytes
            if (pos >= _d.Length) throw Error("file ends before the EOI marker (truncated)", markerAt);
            int marker = _d[pos++];
            if (marker == 0xD9) break; // EOI
            if (marker == 0x01 || marker is >= 0xD0 and <= 0xD7) continue; // TEM, stray RSTn: no payload
            if (marker == 0xD8) throw Error("second SOI marker", markerAt);
            if (marker == 0x00) throw Error("stuffed zero byte where a marker was expected", markerAt);
            if (pos + 2 > _d.Length) throw Error($"file ends inside the length of marker 0x{marker:X2} (truncated)", markerAt);
            int len = BinaryPrimitives.ReadUInt16BigEndian(_d.AsSpan(pos));
            if (len < 2) throw Error($"marker 0x{marker:X2} has a bogus length {len}", markerAt);
            if (pos + len > _d.Length) throw Error($"marker 0x{marker:X2} segment of {len} bytes runs past the end of the file (truncated)", markerAt);
            var seg = _d.AsSpan(pos + 2, len - 2);
            int segAt = pos + 2;
            pos += len;
            switch (marker)
            {
                case 0xC0 or 0xC1 or 0xC2:
                    ParseFrame(seg, segAt, marker == 0xC2, _d.Length - pos);
                    break;
                case 0xC3: throw Error("lossless JPEG (SOF3) is not supported", markerAt);
                case 0xC5 or 0xC6 or 0xC7 or 0xDE or 0xDF: throw Error("hierarchical JPEG is not supported", markerAt);
                case 0xC9 or 0xCA or 0xCB or 0xCD or 0xCE or 0xCF or 0xCC:
                    throw Error("arithmetic-coded JPEG is not supported", markerAt);
                case 0xC8: throw Error("reserved JPG marker 0xC8", markerAt);
                case 0xC4: ParseHuffman(seg, segAt); break;
                case 0xDB: ParseQuant(seg, segAt); break;
                case 0xDD:
                    if (seg.Length != 2) throw Error($"DRI segment is {seg.Length} bytes, not 2", markerAt);
                    _restartInterval = BinaryPrimitives.ReadUInt16BigEndian(seg);
                    break;
                case 0xDC: throw Error("DNL marker (height defined after the first scan) is not supported", markerAt);
                case 0xDA:
                    if (!_frame) throw Error("SOS before any SOF frame header", markerAt);
                    if (++_scans > MaxScans) throw Error($"more than {MaxScans} scans", markerAt);
                    pos = DecodeScan(seg, segAt, pos);
                    sawScan = true;
                    break;
                case 0xE0:
                    if (seg.Length >= 14 && seg.StartsWith("JFIF\0"u8)) _jfif = true;
                    break;
                case 0xE1:
                    if (!_sawExif && seg.Length >= 5 && seg.StartsWith("Exif\0"u8))
                    {
                        _sawExif = true;
                        _orientation = ExifOrientation.FromApp1(seg);
                    }
                    break;
                case 0xEE:
                    if (seg.Length >= 12 && seg.StartsWith("Adobe"u8))
                    {
                        _adobe = true;
                        _adobeTransform = seg[11];
                    }
                    break;
                default:
                    if (marker is >= 0xE2 and <= 0xEF or 0xFE or >= 0xF0 and <= 0xFD) break; // APPn, COM, JPGn: skipped
                    throw Error($"unknown marker 0x{marker:X2}", markerAt);
            }
        }
        if (!_frame) throw Error("no SOF frame header before EOI");
        if (!sawScan) throw Error("no SOS scan before EOI");
        foreach (var c in _comps)
            if (c.CoefBits[0] < 0) throw Error($"component {c.Id} has no DC data (no scan covered it)");
        return new DecodedImage(Output(), _orientation);
    }

    // ---- headers ----

    private void ParseFrame(ReadOnlySpan<byte> s, int at, bool progressive, long bytesAfter)
    {
        if (_frame) throw Error("second SOF frame header", at - 4);
        if (s.Length < 6) throw Error("SOF segment is too short", at);
        if (s[0] != 8) throw Error($"{s[0]}-bit samples are not supported (only 8-bit JPEG)", at);
        int h = BinaryPrimitives.ReadUInt16BigEndian(s[1..]), w = BinaryPrimitives.ReadUInt16BigEndian(s[3..]);
        int n = s[5];
        if (h == 0) throw Error("frame height 0 (defined by a DNL marker) is not supported", at + 1);
        if (w == 0) throw Error("frame width is 0", at + 3);
        if (n is not (1 or 3 or 4)) throw Error($"{n} components are not supported (1, 3 or 4)", at + 5);
        if (s.Length != 6 + 3 * n) throw Error($"SOF segment is {s.Length} bytes, {6 + 3 * n} expected for {n} components", at);
        ImageLimits.Check(Fmt, w, h, _options, at + 1);
        _comps = new Component[n];
        for (int i = 0; i < n; i++)
        {
            var e = s.Slice(6 + 3 * i, 3);
            int hs = e[1] >> 4, vs = e[1] & 15;
            if (hs is < 1 or > 4 || vs is < 1 or > 4) throw Error($"component {e[0]} has sampling factors {hs}x{vs} (each must be 1..4)", at + 6 + 3 * i);
            if (e[2] > 3) throw Error($"component {e[0]} uses quantization table {e[2]} (0..3)", at + 6 + 3 * i);
            _comps[i] = new Component { Id = e[0], H = hs, V = vs, Tq = e[2], Index = i };
        }
        _width = w;
        _height = h;
        _progressive = progressive;
        _hmax = _comps.Max(c => c.H);
        _vmax = _comps.Max(c => c.V);
        _mcusX = (w + 8 * _hmax - 1) / (8 * _hmax);
        _mcusY = (h + 8 * _vmax - 1) / (8 * _vmax);
        long blocks = 0, allocated = 0;
        foreach (var c in _comps)
        {
            if (_hmax % c.H != 0 || _vmax % c.V != 0)
                throw Error($"sampling factors {string.Join(",", _comps.Select(x => $"{x.H}x{x.V}"))} are not integral ratios", at + 6);
            c.CompW = (int)(((long)w * c.H + _hmax - 1) / _hmax);
            c.CompH = (int)(((long)h * c.V + _vmax - 1) / _vmax);
            blocks += (long)((c.CompW + 7) / 8) * ((c.CompH + 7) / 8);
            allocated += (long)_mcusX * c.H * _mcusY * c.V;
        }
        // Every block has a DC Huffman code of at least one bit in the scans that follow.
        if (blocks > bytesAfter * 8)
            throw Error($"{bytesAfter} bytes after the frame header cannot hold the {blocks} blocks of a {w}x{h} frame (at least one bit each; the file is truncated)", at);
        _workBudget = allocated * 64 * MaxPassesPerCoefficient;
        foreach (var c in _comps)
        {
            c.BlocksW = _mcusX * c.H;
            c.BlocksH = _mcusY * c.V;
            c.Coefs = new short[(long)c.BlocksW * c.BlocksH * 64];
            c.CoefBits = new int[64];
            Array.Fill(c.CoefBits, -1);
        }
        _frame = true;
    }

    private void ParseQuant(ReadOnlySpan<byte> s, int at)
    {
        int p = 0;
        while (p < s.Length)
        {
            int pq = s[p] >> 4, tq = s[p] & 15;
            if (pq > 1 || tq > 3) throw Error($"DQT table precision {pq} / index {tq} is invalid", at + p);
            int size = pq == 0 ? 64 : 128;
            if (p + 1 + size > s.Length) throw Error("DQT segment ends inside a table", at + p);
            var q = new short[64];
            for (int k = 0; k < 64; k++)
                q[Natural[k]] = pq == 0 ? s[p + 1 + k] : unchecked((short)BinaryPrimitives.ReadUInt16BigEndian(s[(p + 1 + 2 * k)..]));
            _quant[tq] = q;
            p += 1 + size;
        }
    }

    private void ParseHuffman(ReadOnlySpan<byte> s, int at)
    {
        int p = 0;
        while (p < s.Length)
        {
            if (p + 17 > s.Length) throw Error("DHT segment ends inside a table header", at + p);
            int tc = s[p] >> 4, th = s[p] & 15;
            if (tc > 1 || th > 3) throw Error($"DHT table class {tc} / index {th} is invalid", at + p);
            var counts = s.Slice(p + 1, 16);
            int total = 0;
            foreach (var c in counts) total += c;
            if (total > 256) throw Error($"DHT table has {total} codes (at most 256)", at + p);
            if (p + 17 + total > s.Length) throw Error("DHT segment ends inside a table's symbols", at + p);
            var t = new HuffTable();
            s.Slice(p + 17, total).CopyTo(t.Values);
            if (tc == 0)
                for (int i = 0; i < total; i++)
                    if (t.Values[i] > 15) throw Error($"DC Huffman table {th} has symbol {t.Values[i]} (at most 15)", at + p);
            int code = 0, k = 0;
            for (int len = 1; len <= 16; len++)
            {
                int n = counts[len - 1];
                // libjpeg: the codes of each length must fit in len bits, leaving the all-ones code unused.
                if (code + n >= 1 << len) throw Error($"Huffman table {(tc == 0 ? "DC" : "AC")}{th} is over-subscribed (bad code lengths)", at + p);
                t.ValOffset[len] = k - code;
                if (n > 0)
                {
                    for (int i = 0; i < n; i++, k++, code++)
                        if (len <= HuffTable.FastBits)
                        {
                            int shift = HuffTable.FastBits - len;
                            var entry = (ushort)((len << 8) | t.Values[k]);
                            t.Fast.AsSpan(code << shift, 1 << shift).Fill(entry);
                        }
                    t.MaxCode[len] = code - 1;
                }
                else t.MaxCode[len] = -1;
                code <<= 1;
            }
            t.MaxCode[17] = int.MaxValue;
            (tc == 0 ? _dcTables : _acTables)[th] = t;
            p += 17 + total;
        }
    }

    // ---- scans ----

    private int DecodeScan(ReadOnlySpan<byte> s, int at, int dataStart)
    {
        if (s.Length < 1) throw Error("SOS segment is empty", at);
        int ns = s[0];
        if (ns is < 1 or > 4 || s.Length != 4 + 2 * ns) throw Error($"SOS segment of {s.Length} bytes does not fit {ns} components", at);
        var comps = new Component[ns];
        for (int i = 0; i < ns; i++)
        {
            int id = s[1 + 2 * i];
            var c = Array.Find(_comps, x => x.Id == id) ?? throw Error($"scan names component {id}, which the frame does not have", at + 1 + 2 * i);
            if (Array.IndexOf(comps, c) >= 0) throw Error($"scan names component {id} twice", at + 1 + 2 * i);
            c.DcTable = s[2 + 2 * i] >> 4;
            c.AcTable = s[2 + 2 * i] & 15;
            if (c.DcTable > 3 || c.AcTable > 3) throw Error($"scan uses Huffman table index {Math.Max(c.DcTable, c.AcTable)} (0..3)", at + 2 + 2 * i);
            comps[i] = c;
        }
        int ss = s[1 + 2 * ns], se = s[2 + 2 * ns], ah = s[3 + 2 * ns] >> 4, al = s[3 + 2 * ns] & 15;
        if (ns > 1 && comps.Sum(c => c.H * c.V) > 10) throw Error("an interleaved MCU holds more than 10 blocks", at);

        if (_progressive)
        {
            bool bad = ss == 0 ? se != 0 : ss > se || se > 63 || ns != 1;
            if (ah != 0 && al != ah - 1) bad = true;
            if (al > 13) bad = true;
            if (bad) throw Error($"invalid progressive scan parameters Ss={ss} Se={se} Ah={ah} Al={al} for {ns} component(s)", at);
            foreach (var c in comps)
                for (int k = ss; k <= se; k++) c.CoefBits[k] = al;
        }
        else
        {
            // Sequential: libjpeg ignores Ss/Se/Ah/Al (it only warns), and so does this decoder.
            (ss, se, ah, al) = (0, 63, 0, 0);
            foreach (var c in comps) Array.Fill(c.CoefBits, 0);
        }

        foreach (var c in comps)
        {
            c.Quant ??= _quant[c.Tq] ?? throw Error($"component {c.Id} uses quantization table {c.Tq}, which is not defined", at);
            bool needDc = ss == 0 && ah == 0, needAc = se > 0;
            if (needDc && _dcTables[c.DcTable] is null) throw Error($"DC Huffman table {c.DcTable} is not defined", at);
            if (needAc && _acTables[c.AcTable] is null) throw Error($"AC Huffman table {c.AcTable} is not defined", at);
            c.Pred = 0;
        }

        // The coefficients this scan visits, charged before it runs.
        long visits = 0;
        foreach (var c in comps)
            visits += ns == 1 ? (long)((c.CompW + 7) / 8) * ((c.CompH + 7) / 8) : (long)_mcusX * _mcusY * c.H * c.V;
        _work += visits * (se - ss + 1);
        if (_work > _workBudget)
            throw Error($"the scans visit the frame's coefficients more than {MaxPassesPerCoefficient} times each (a scan repeated over and over?)", at);

        ResetReader(dataStart);
        _eobrun = 0;
        int restarts = 0;
        long mcu = 0;
        if (ns == 1)
        {
            var c = comps[0];
            int bw = (c.CompW + 7) / 8, bh = (c.CompH + 7) / 8;
            for (int by = 0; by < bh; by++)
                for (int bx = 0; bx < bw; bx++)
                {
                    if (_restartInterval > 0 && mcu > 0 && mcu % _restartInterval == 0) Restart(comps, restarts++);
                    DecodeBlock(c, bx, by, ss, se, ah, al);
                    CheckOverrun();
                    mcu++;
                }
        }
        else
        {
            for (int my = 0; my < _mcusY; my++)
                for (int mx = 0; mx < _mcusX; mx++)
                {
                    if (_restartInterval > 0 && mcu > 0 && mcu % _restartInterval == 0) Restart(comps, restarts++);
                    foreach (var c in comps)
                        for (int v = 0; v < c.V; v++)
                            for (int h = 0; h < c.H; h++)
                                DecodeBlock(c, mx * c.H + h, my * c.V + v, ss, se, ah, al);
                    CheckOverrun();
                    mcu++;
                }
        }
        return NextMarker();
    }

    private void DecodeBlock(Component c, int bx, int by, int ss, int se, int ah, int al)
    {
        var blk = c.Coefs.AsSpan((int)(((long)by * c.BlocksW + bx) * 64), 64);
        if (!_progressive)
        {
            var dc = _dcTables[c.DcTable]!;
            var ac = _acTables[c.AcTable]!;
            int t = DecodeHuffman(dc);
            c.Pred += t == 0 ? 0 : Extend(ReceiveBits(t), t);
            blk[0] = (short)c.Pred;
            for (int k = 1; k < 64; k++)
            {
                int rs = DecodeHuffman(ac), r = rs >> 4, sz = rs & 15;
                if (sz != 0)
                {
                    k += r;
                    blk[Natural[k]] = (short)Extend(ReceiveBits(sz), sz);
                }
                else
                {
                    if (r != 15) break;
                    k += 15;
                }
            }
            return;
        }

        if (ss == 0)
        {
            if (ah == 0)
            {
                int t = DecodeHuffman(_dcTables[c.DcTable]!);
                c.Pred += t == 0 ? 0 : Extend(ReceiveBits(t), t);
                blk[0] = (short)(c.Pred << al);
            }
            else if (ReceiveBits(1) != 0) blk[0] |= (short)(1 << al);
            return;
        }

        var table = _acTables[c.AcTable]!;
        if (ah == 0)
        {
            if (_eobrun > 0)
            {
                _eobrun--;
                return;
            }
            for (int k = ss; k <= se; k++)
            {
                int rs = DecodeHuffman(table), r = rs >> 4, sz = rs & 15;
                if (sz != 0)
                {
                    k += r;
                    blk[Natural[k]] = (short)(Extend(ReceiveBits(sz), sz) << al);
                }
                else if (r == 15) k += 15;
                else
                {
                    _eobrun = 1 << r;
                    if (r > 0) _eobrun += ReceiveBits(r);
                    _eobrun--;
                    break;
                }
            }
            return;
        }

        // AC successive-approximation refinement (libjpeg jdphuff.c decode_mcu_AC_refine).
        int p1 = 1 << al, m1 = -1 << al;
        int kk = ss;
        if (_eobrun == 0)
        {
            for (; kk <= se; kk++)
            {
                int rs = DecodeHuffman(table), r = rs >> 4, sz = rs & 15;
                int value = 0;
                if (sz != 0)
                {
                    if (sz != 1) throw Error($"bad refinement coefficient size {sz} in progressive AC scan", _pos);
                    value = ReceiveBits(1) != 0 ? p1 : m1;
                }
                else if (r != 15)
                {
                    _eobrun = 1 << r;
                    if (r > 0) _eobrun += ReceiveBits(r);
                    break;
                }
                do
                {
                    int z = Natural[kk];
                    if (blk[z] != 0)
                    {
                        if (ReceiveBits(1) != 0 && (blk[z] & p1) == 0)
                            blk[z] = (short)(blk[z] >= 0 ? blk[z] + p1 : blk[z] + m1);
                    }
                    else if (--r < 0) break;
                    kk++;
                } while (kk <= se);
                if (value != 0) blk[Natural[kk]] = (short)value;
            }
        }
        if (_eobrun > 0)
        {
            for (; kk <= se; kk++)
            {
                int z = Natural[kk];
                if (blk[z] != 0 && ReceiveBits(1) != 0 && (blk[z] & p1) == 0)
                    blk[z] = (short)(blk[z] >= 0 ? blk[z] + p1 : blk[z] + m1);
            }
            _eobrun--;
        }
    }

    private static int Extend(int v, int s) => v < 1 << (s - 1) ? v - (1 << s) + 1 : v;

    // ---- bit reader ----

    private void ResetReader(int pos)
    {
        _pos = pos;
        _bits = 0;
        _bitCount = 0;
        _realBits = 0;
        _atMarker = false;
    }

    private void Fill()
    {
        while (_bitCount <= 56)
        {
            int b = 0;
            if (!_atMarker)
            {
                if (_pos >= _d.Length) _atMarker = true;
                else if (_d[_pos] != 0xFF) b = _d[_pos++];
                else
                {
                    int p = _pos + 1;
                    while (p < _d.Length && _d[p] == 0xFF) p++;
                    if (p < _d.Length && _d[p] == 0)
                    {
                        b = 0xFF;
                        _pos = p + 1;
                    }
                    else _atMarker = true; // a marker (or the end of the file): feed zeros from here on
                }
                if (!_atMarker) _realBits += 8;
            }
            _bits |= (ulong)b << (56 - _bitCount);
            _bitCount += 8;
        }
    }

    private int ReceiveBits(int n)
    {
        if (_bitCount < n) Fill();
        int v = (int)(_bits >> (64 - n));
        _bits <<= n;
        _bitCount -= n;
        _realBits -= n;
        return v;
    }

    private int DecodeHuffman(HuffTable t)
    {
        if (_bitCount < 16) Fill();
        int e = t.Fast[(int)(_bits >> (64 - HuffTable.FastBits))];
        if (e != 0)
        {
            int len = e >> 8;
            _bits <<= len;
            _bitCount -= len;
            _realBits -= len;
            return e & 0xFF;
        }
        for (int len = HuffTable.FastBits + 1; len <= 16; len++)
        {
            int code = (int)(_bits >> (64 - len));
            if (code <= t.MaxCode[len])
            {
                _bits <<= len;
                _bitCount -= len;
                _realBits -= len;
                return t.Values[(code + t.ValOffset[len]) & 0xFF];
            }
        }
        throw Error(_atMarker && _realBits <= 0 ? "entropy-coded data ends early (truncated)" : "bad Huffman code in entropy-coded data", _pos);
    }

    private void CheckOverrun()
    {
        if (_realBits < 0)
            throw Error(_pos >= _d.Length ? "file ends inside entropy-coded data (truncated)" : "entropy-coded data ends before the scan is complete", _pos);
    }

    // After restartInterval MCUs: drop the partial byte, expect RSTn with n = index mod 8, reset predictors.
    private void Restart(Component[] comps, int index)
    {
        int at = NextMarker();
        int want = 0xD0 + (index & 7);
        if (at + 1 >= _d.Length) throw Error($"file ends where marker RST{index & 7} was expected (truncated)", at);
        int got = _d[at + 1];
        if (got != want) throw Error($"expected restart marker RST{index & 7}, found marker 0x{got:X2}", at);
        ResetReader(at + 2);
        foreach (var c in comps) c.Pred = 0;
        _eobrun = 0;
    }

    // Position of the next marker at or after the reader's position (skipping leftover entropy bytes).
    private int NextMarker()
    {
        int p = _pos;
        while (true)
        {
            while (p < _d.Length && _d[p] != 0xFF) p++;
            if (p >= _d.Length) return _d.Length;
            int q = p + 1;
            while (q < _d.Length && _d[q] == 0xFF) q++;
            if (q >= _d.Length) return _d.Length;
            if (_d[q] != 0) return q - 1;
            p = q + 1;
        }
    }

    // ---- output ----

    private RgbImage Output()
    {
        var planes = new byte[_comps.Length][];
        for (int ci = 0; ci < _comps.Length; ci++)
        {
            var c = _comps[ci];
            int bw = (c.CompW + 7) / 8, bh = (c.CompH + 7) / 8, stride = bw * 8;
            var plane = new byte[(long)stride * bh * 8];
            var q = c.Quant!;
            for (int by = 0; by < bh; by++)
                for (int bx = 0; bx < bw; bx++)
                    JpegIdct.Islow(c.Coefs.AsSpan((int)(((long)by * c.BlocksW + bx) * 64), 64), q,
                        plane.AsSpan(by * 8 * stride + bx * 8), stride);
            c.Coefs = [];
            planes[ci] = JpegColor.Upsample(plane, stride, c.CompW, c.CompH, _hmax / c.H, _vmax / c.V, _width, _height);
        }
        var image = new RgbImage(_width, _height);
        var rgb = image.Pixels.AsSpan();
        switch (_comps.Length)
        {
            case 1:
                JpegColor.Gray(planes[0], rgb);
                break;
            case 3 when IsRgb():
                JpegColor.Interleave(planes[0], planes[1], planes[2], rgb);
                break;
            case 3:
                JpegColor.YccToRgb(planes[0], planes[1], planes[2], rgb);
                break;
            default:
                // libjpeg: 4 components are YCCK only when an Adobe marker says transform 2 (or anything but 0).
                JpegColor.CmykToRgb(planes[0], planes[1], planes[2], planes[3], _adobe && _adobeTransform != 0, rgb);
                break;
        }
        return image;
    }

    // libjpeg-turbo's default_decompress_parms for 3 components: JFIF -> YCbCr; Adobe transform 0 -> RGB
    // (anything else YCbCr); no marker: ids 'R','G','B' -> RGB, else YCbCr.
    private bool IsRgb()
    {
        if (_jfif) return false;
        if (_adobe) return _adobeTransform == 0;
        return _comps[0].Id == 'R' && _comps[1].Id == 'G' && _comps[2].Id == 'B';
    }
}
