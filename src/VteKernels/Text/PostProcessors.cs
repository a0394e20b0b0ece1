// Post-processors of tokenizer.json: TemplateProcessing (the special tokens around a single sequence,
// e.g. "<s> $A"), ByteLevel (offsets only: no change to ids), Sequence, and the fixed templates of
// BertProcessing ([CLS] $A [SEP]) and RobertaProcessing (<s> $A </s>). Only single sequences are encoded
// here; pair templates are read but not used.
namespace VteKernels.Text;

/// <summary>Adds special tokens around an encoded sequence.</summary>
internal abstract class PostProcessor
{
    /// <summary>The ids with the special tokens of a single sequence added.</summary>
    public abstract List<int> Process(List<int> ids);

    /// <summary>The ids this processor puts before and after a single sequence.</summary>
    public abstract (IReadOnlyList<int> Prefix, IReadOnlyList<int> Suffix) SingleSpecials { get; }
}

/// <summary>A single-sequence template: special ids, the sequence, special ids.</summary>
internal sealed class TemplatePostProcessor(IReadOnlyList<int> prefix, IReadOnlyList<int> suffix) : PostProcessor
{
    public override (IReadOnlyList<int> Prefix, IReadOnlyList<int> Suffix) SingleSpecials => (prefix, suffix);

    public override List<int> Process(List<int> ids)
    {
        if (prefix.Count == 0 && suffix.Count == 0) return ids;
        var result = new List<int>(ids.Count + prefix.Count + suffix.Count);
        result.AddRange(prefix);
        result.AddRange(ids);
        result.AddRange(suffix);
        return result;
    }
}

/// <summary>Applies processors in order.</summary>
internal sealed class SequencePostProcessor(IReadOnlyList<PostProcessor> items) : PostProcessor
{
    public override (IReadOnlyList<int> Prefix, IReadOnlyList<int> Suffix) SingleSpecials
    {
        get
        {
            var pre = new List<int>();
            var suf = new List<int>();
            foreach (var p in items)
            {
                var (a, b) = p.SingleSpecials;
                pre.InsertRange(0, a);
                suf.AddRange(b);
            }
            return (pre, suf);
        }
    }

    public override List<int> Process(List<int> ids)
    {
        foreach (var p in items) ids = p.Process(ids);
        return ids;
    }
}
