// How answers to visual questions are scored, rule for rule as the reference evaluators do it:
//
//   vqa      VQAv2's official evaluation (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py,
//            the Python 3 version, commit c4e6a0e). The prediction: newlines and tabs become spaces, then
//            strip, then processPunctuation, then processDigitArticle. The human answers are compared as
//            given, except that when they are not all identical each goes through processPunctuation (only).
//            accuracy = mean over the n answers i of min(1, #{j != i : answer_j == prediction} / 3): the
//            official average over the n leave-one-out subsets, not min(#matches / 3, 1) over all n. The two
//            differ: 3 matching answers of 10 give 0.9 here (7 subsets hold 3 matches, 3 hold 2), 1.0 in the
//            simple form. Papers' VQAv2 numbers are the official form, so that is the one computed.
//   textvqa  LLaVA's TextVQA scorer (llava/eval/m4c_evaluator.py, TextVQAAccuracyEvaluator, from MMF): both the
//            prediction and every human answer go through EvalAI's answer processor (lowercase; remove ',' and
//            '?'; "'s" -> " 's"; strip; newlines/tabs to spaces; strip; punctuation; digits and articles),
//            then the same leave-one-out average.
//   exact    GQA as LLaVA scores it (scripts/convert_gqa_for_eval.py: text.rstrip('.').lower(), then GQA's
//            eval compares strings): both sides stripped of surrounding whitespace and trailing periods,
//            lowercased, then compared.
//   choice   ScienceQA as LLaVA scores it (llava/eval/eval_science_qa.py): the option letter is read from the
//            text (a bare letter A-E; "X. " at the start; else "The answer is X." or "The answer is X"), and
//            the answer is right when it is the gold letter. Text with no readable letter is wrong.
//
// processPunctuation: for each of ; / [ ] " { } ( ) = + \ _ - > < @ ` , ? ! in turn, every occurrence is
// deleted when the ORIGINAL text has that mark followed or preceded by a space, or has a digit-comma-digit
// anywhere; otherwise each occurrence becomes a space. Then every '.' not followed by a digit is deleted,
// at most 32 of them (the Python code passes re.UNICODE, 32, as re.sub's count). processDigitArticle:
// lowercase, split on whitespace, number words none/zero..ten -> 0..10, drop a/an/the, expand the
// contraction table (keys without apostrophes -> the apostrophe form), join with single spaces.
// Python semantics kept: str.strip/split whitespace (Unicode whitespace plus \x1c-\x1f), \d = Unicode digits.
// Lowercasing is .NET's invariant mapping, which equals Python's str.lower on everything but a few
// non-ASCII letters with multi-character lowercase forms (U+0130).
using System.Text.RegularExpressions;

namespace VteKernels.Evaluation;

/// <summary>How a question's answer is scored.</summary>
public enum ScoreMetric
{
    /// <summary>Not scored (no gold answer).</summary>
    None,

    /// <summary>VQAv2's official accuracy over a list of human answers.</summary>
    Vqa,

    /// <summary>TextVQA's accuracy (EvalAI normalization of both sides) over a list of human answers.</summary>
    TextVqa,

    /// <summary>Exact match after GQA-style normalization.</summary>
    Exact,

    /// <summary>Multiple-choice option letter (ScienceQA style).</summary>
    Choice,
}

/// <summary>The scoring rules of the VQA benchmarks LLaVA reports (see the file header for their sources).</summary>
public static partial class VqaScoring
{
    private static readonly char[] Punctuation = [';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'];

    private static readonly Dictionary<string, string> NumberWords = new(StringComparer.Ordinal)
    {
        ["none"] = "0", ["zero"] = "0", ["one"] = "1", ["two"] = "2", ["three"] = "3", ["four"] = "4",
        ["five"] = "5", ["six"] = "6", ["seven"] = "7", ["eight"] = "8", ["nine"] = "9", ["ten"] = "10",
    };

    private static readonly HashSet<string> Articles = new(StringComparer.Ordinal) { "a", "an", "the" };

    // The contraction table of both evaluators, as "written=expanded" pairs. The keys with capitals never
    // match (the words are lowercased first); they are kept because the table has them.
    private const string ContractionPairs =
        "aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've " +
        "couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've " +
        "hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's " +
        "howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd " +
        "itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've " +
        "mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've " +
        "oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't " +
        "shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't " +
        "shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've " +
        "somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd " +
        "someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's " +
        "somethingd=something'd somethingd've=something'd've something'dve=something'd've " +
        "somethingll=something'll thats=that's thered=there'd thered've=there'd've there'dve=there'd've " +
        "therere=there're theres=there's theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll " +
        "theyre=they're theyve=they've twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've " +
        "werent=weren't whatll=what'll whatre=what're whats=what's whatve=what've whens=when's whered=where'd " +
        "wheres=where's whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's " +
        "whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't " +
        "wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll " +
        "yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've " +
        "you'dve=you'd've youll=you'll youre=you're youve=you've";

    private static readonly Dictionary<string, string> Contractions = ContractionPairs.Split(' ')
        .Select(p => p.Split('=')).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);

    [GeneratedRegex(@"(\d)(,)(\d)", RegexOptions.CultureInvariant)]
    private static partial Regex DigitCommaDigit();

    [GeneratedRegex(@"(?<=\d)(,)+(?=\d)", RegexOptions.CultureInvariant)]
    private static partial Regex DigitCommasDigit();

    // The reference's "(?!<=\d)(\.)(?!\d)": its first group is a lookahead (not a lookbehind) that a '.'
    // always satisfies, so it deletes every period not followed by a digit.
    [GeneratedRegex(@"\.(?!\d)", RegexOptions.CultureInvariant)]
    private static partial Regex PeriodNotBeforeDigit();

    [GeneratedRegex(@"^([A-E])\. ", RegexOptions.CultureInvariant)]
    private static partial Regex LetterAtStart();

    [GeneratedRegex(@"The answer is ([A-E])\.", RegexOptions.CultureInvariant)]
    private static partial Regex AnswerIsLetterPeriod();

    [GeneratedRegex(@"The answer is ([A-E])", RegexOptions.CultureInvariant)]
    private static partial Regex AnswerIsLetter();

    [GeneratedRegex(@"(^|\n)\(?A[.)] ", RegexOptions.CultureInvariant)]
    private static partial Regex OptionLine();

    /// <summary>Python's str.isspace for one character (.NET's set plus the separators U+001C..U+001F).</summary>
    internal static bool IsPythonSpace(char c) => char.IsWhiteSpace(c) || c is >= '\u001c' and <= '\u001f';

    /// <summary>Python's str.strip().</summary>
    internal static string PythonStrip(string s)
    {
        int a = 0, b = s.Length;
        while (a < b && IsPythonSpace(s[a])) a++;
        while (b > a && IsPythonSpace(s[b - 1])) b--;
        return s[a..b];
    }

    /// <summary>Python's str.split() with no argument: runs of whitespace separate, empty pieces dropped.</summary>
    internal static List<string> PythonSplit(string s)
    {
        var words = new List<string>();
        int i = 0;
        while (i < s.Length)
        {
            while (i < s.Length && IsPythonSpace(s[i])) i++;
            int start = i;
            while (i < s.Length && !IsPythonSpace(s[i])) i++;
            if (i > start) words.Add(s[start..i]);
        }
        return words;
    }

    /// <summary>vqaEval.py's processPunctuation (see the file header); <paramref name="evalAi"/> uses EvalAI's comma pattern.</summary>
    public static string ProcessPunctuation(string text, bool evalAi = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        bool digitComma = (evalAi ? DigitCommasDigit() : DigitCommaDigit()).IsMatch(text);
        var outText = text;
        foreach (var p in Punctuation)
        {
            bool spaced = text.Contains(p + " ", StringComparison.Ordinal) || text.Contains(" " + p, StringComparison.Ordinal);
            outText = outText.Replace(p.ToString(), spaced || digitComma ? "" : " ", StringComparison.Ordinal);
        }
        return PeriodNotBeforeDigit().Replace(outText, "", 32);
    }

    /// <summary>vqaEval.py's processDigitArticle: lowercase, number words to digits, articles dropped, contractions expanded.</summary>
    public static string ProcessDigitArticle(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var words = new List<string>();
        foreach (var raw in PythonSplit(text.ToLowerInvariant()))
        {
            var word = NumberWords.GetValueOrDefault(raw, raw);
            if (!Articles.Contains(word)) words.Add(word);
        }
        for (int i = 0; i < words.Count; i++)
            if (Contractions.TryGetValue(words[i], out var expanded)) words[i] = expanded;
        return string.Join(' ', words);
    }

    /// <summary>The prediction as VQAv2's official evaluation normalizes it before comparing.</summary>
    public static string NormalizeVqaPrediction(string prediction)
    {
        ArgumentNullException.ThrowIfNull(prediction);
        var s = PythonStrip(prediction.Replace('\n', ' ').Replace('\t', ' '));
        return ProcessDigitArticle(ProcessPunctuation(s));
    }

    /// <summary>EvalAI's answer processor (MMF's EvalAIAnswerProcessor, used by LLaVA's TextVQA scorer).</summary>
    public static string NormalizeEvalAi(string answer)
    {
        ArgumentNullException.ThrowIfNull(answer);
        var s = answer.ToLowerInvariant().Replace(",", "", StringComparison.Ordinal).Replace("?", "", StringComparison.Ordinal)
            .Replace("'s", " 's", StringComparison.Ordinal);
        s = PythonStrip(PythonStrip(s).Replace('\n', ' ').Replace('\t', ' '));
        return ProcessDigitArticle(ProcessPunctuation(s, evalAi: true));
    }

    /// <summary>
    /// VQAv2's official accuracy of <paramref name="prediction"/> against the human <paramref name="answers"/>
    /// (usually 10): the mean over the leave-one-out subsets of min(1, matches / 3), in [0, 1].
    /// </summary>
    /// <exception cref="ArgumentException">No answers.</exception>
    public static double VqaAccuracy(string prediction, IReadOnlyList<string> answers)
    {
        ArgumentNullException.ThrowIfNull(answers);
        if (answers.Count == 0) throw new ArgumentException("VQA accuracy needs at least one human answer", nameof(answers));
        var pred = NormalizeVqaPrediction(prediction);
        var gts = answers.Distinct(StringComparer.Ordinal).Count() > 1 ? answers.Select(a => ProcessPunctuation(a)).ToList() : [.. answers];
        return LeaveOneOut(pred, gts);
    }

    /// <summary>LLaVA's TextVQA accuracy: EvalAI normalization on both sides, then the leave-one-out mean, in [0, 1].</summary>
    /// <exception cref="ArgumentException">No answers.</exception>
    public static double TextVqaAccuracy(string prediction, IReadOnlyList<string> answers)
    {
        ArgumentNullException.ThrowIfNull(answers);
        if (answers.Count == 0) throw new ArgumentException("TextVQA accuracy needs at least one human answer", nameof(answers));
        return LeaveOneOut(NormalizeEvalAi(prediction), answers.Select(NormalizeEvalAi).ToList());
    }

    private static double LeaveOneOut(string prediction, IReadOnlyList<string> answers)
    {
        int matches = answers.Count(a => a == prediction);
        double sum = 0;
        for (int i = 0; i < answers.Count; i++)
        {
            int others = matches - (answers[i] == prediction ? 1 : 0);
            sum += Math.Min(1.0, others / 3.0);
        }
        return sum / answers.Count;
    }

    /// <summary>GQA-style exact match: both sides stripped, trailing periods removed, lowercased.</summary>
    public static bool ExactMatch(string prediction, string answer)
    {
        ArgumentNullException.ThrowIfNull(prediction);
        ArgumentNullException.ThrowIfNull(answer);
        static string N(string s) => PythonStrip(s).TrimEnd('.').ToLowerInvariant();
        return N(prediction) == N(answer);
    }

    /// <summary>
    /// The option letter (A-E) LLaVA's ScienceQA scorer reads from <paramref name="text"/>, or null (its "FAILED").
    /// </summary>
    public static char? ChoiceLetter(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var t = text.Replace("\n", ". ", StringComparison.Ordinal);
        var stripped = PythonStrip(t);
        if (stripped.Length == 1 && stripped[0] is >= 'A' and <= 'E') return stripped[0];
        if (t.Length >= 3 && t[0] is >= 'A' and <= 'E' && t[1] == '.' && t[2] == ' ') return t[0];
        if (!t.Contains("The answer is ", StringComparison.Ordinal)) return null;
        var m = AnswerIsLetterPeriod().Match(t);
        if (!m.Success) m = AnswerIsLetter().Match(t);
        return m.Success ? m.Groups[1].Value[0] : null;
    }

    /// <summary>Whether a question text lists options as lines "A. ..." (or "(A) ...", "A) ...").</summary>
    public static bool HasOptionLines(string questionText) => OptionLine().IsMatch(questionText);

    /// <summary>The score in [0, 1] of <paramref name="prediction"/> under <paramref name="metric"/>; null for <see cref="ScoreMetric.None"/>.</summary>
    /// <exception cref="ArgumentException">The gold answer(s) the metric needs are missing.</exception>
    public static double? Score(ScoreMetric metric, string prediction, string? answer, IReadOnlyList<string>? answers)
    {
        switch (metric)
        {
            case ScoreMetric.None:
                return null;
            case ScoreMetric.Vqa or ScoreMetric.TextVqa:
                var list = answers ?? (answer is null ? null : [answer]);
                if (list is null || list.Count == 0) throw new ArgumentException($"metric {metric} needs the human answers", nameof(answers));
                return metric == ScoreMetric.Vqa ? VqaAccuracy(prediction, list) : TextVqaAccuracy(prediction, list);
            case ScoreMetric.Exact:
                var gold = answer ?? answers?.FirstOrDefault() ?? throw new ArgumentException("exact match needs an answer", nameof(answer));
                return ExactMatch(prediction, gold) ? 1 : 0;
            case ScoreMetric.Choice:
                var letter = (answer is null ? null : ChoiceLetter(answer)) ?? throw new ArgumentException($"multiple-choice scoring needs a gold letter A-E, got '{answer}'", nameof(answer));
                return ChoiceLetter(prediction) == letter ? 1 : 0;
            default:
                throw new ArgumentOutOfRangeException(nameof(metric), metric, null);
        }
    }

    /// <summary>
    /// The metric a question gets when none is forced: a list of two or more human answers -> <see cref="ScoreMetric.Vqa"/>;
    /// one answer -> <see cref="ScoreMetric.Choice"/> when the question lists options and the answer is a letter,
    /// else <see cref="ScoreMetric.Exact"/>; no answer -> <see cref="ScoreMetric.None"/>.
    /// </summary>
    public static ScoreMetric AutoMetric(string questionText, string? answer, IReadOnlyList<string>? answers)
    {
        if (answers is { Count: >= 2 }) return ScoreMetric.Vqa;
        var single = answer ?? answers?.FirstOrDefault();
        if (single is null) return ScoreMetric.None;
        return HasOptionLines(questionText) && ChoiceLetter(single) is not null ? ScoreMetric.Choice : ScoreMetric.Exact;
    }

    /// <summary>The metric's name on the command line and in JSON.</summary>
    public static string Name(ScoreMetric metric) => metric switch
    {
        ScoreMetric.None => "none", ScoreMetric.Vqa => "vqa", ScoreMetric.TextVqa => "textvqa",
        ScoreMetric.Exact => "exact", ScoreMetric.Choice => "choice", _ => metric.ToString(),
    };
}
