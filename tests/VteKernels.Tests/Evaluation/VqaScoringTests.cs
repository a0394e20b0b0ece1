// The scoring rules against hand-made cases whose expected values were worked out by hand from the
// reference evaluators' rules (vqaEval.py of GT-Vision-Lab/VQA c4e6a0e, LLaVA's m4c_evaluator.py and
// eval_science_qa.py, LLaVA's GQA conversion); each case says which rule it exercises.
using VteKernels.Evaluation;
using Xunit;

namespace VteKernels.Tests.Evaluation;

public sealed class VqaScoringTests
{
    private static string[] Many(params (string Answer, int Count)[] groups) =>
        groups.SelectMany(g => Enumerable.Repeat(g.Answer, g.Count)).ToArray();

    public static TheoryData<string, string, string[], double> VqaCases() => new()
    {
        // case, prediction, human answers, official accuracy
        { "number word to digit in the prediction", "Two", Many(("2", 10)), 1.0 },
        { "answers equal to each other are compared raw: 'two' never matches the prediction's '2'", "two", Many(("two", 10)), 0.0 },
        { "trailing period removed", "yes.", Many(("yes", 10)), 1.0 },
        { "leave-one-out: 3 of 10 match -> (3*2/3 + 7*1)/10", "3", Many(("3", 3), ("4", 7)), 0.9 },
        { "leave-one-out: 2 of 10 match -> (2*1/3 + 8*2/3)/10", "4", Many(("3", 8), ("4", 2)), 0.6 },
        { "leave-one-out: 1 of 10 matches -> 9/30", "cat", Many(("cat", 1), ("dog", 9)), 0.3 },
        { "no match", "cat", Many(("dog", 10)), 0.0 },
        { "article dropped", "the dog", Many(("dog", 10)), 1.0 },
        { "comma followed by a space is deleted", "red, white", Many(("red white", 5), ("red and white", 5)), 1.0 },
        { "digit,comma,digit anywhere deletes every mark", "1,000", Many(("1000", 10)), 1.0 },
        { "an unspaced slash becomes a space, then 'a' is an article", "a/b", Many(("b", 10)), 1.0 },
        { "a period before a digit stays", "3.5", Many(("3.5", 10)), 1.0 },
        { "contraction expanded in the prediction", "dont", Many(("don't", 10)), 1.0 },
        { "apostrophe is no punctuation here", "don't", Many(("don't", 10)), 1.0 },
        { "differing answers get punctuation processing: hot-dog -> hot dog", "hot dog", Many(("hot-dog", 4), ("hot dog", 6)), 1.0 },
        { "identical answers get none: hot-dog stays", "hot dog", Many(("hot-dog", 10)), 0.0 },
        { "newline and surrounding space", " yes\n", Many(("yes", 10)), 1.0 },
        { "upper case lowered in the prediction only", "YES", Many(("yes", 10)), 1.0 },
        { "a spaced question mark is deleted", "yes ?", Many(("yes", 10)), 1.0 },
        { "an unspaced exclamation mark becomes a space (then split away)", "yes!", Many(("yes", 10)), 1.0 },
        { "at most 32 periods are removed (re.sub's count is re.UNICODE = 32)", new string('.', 40), Many((new string('.', 8), 10)), 1.0 },
        { "'none' maps to 0", "none", Many(("0", 10)), 1.0 },
    };

    [Theory, MemberData(nameof(VqaCases))]
    public void VqaAccuracyFollowsTheOfficialRules(string @case, string prediction, string[] answers, double expected)
    {
        Assert.True(Math.Abs(VqaScoring.VqaAccuracy(prediction, answers) - expected) < 1e-12, $"{@case}: got {VqaScoring.VqaAccuracy(prediction, answers)}");
    }

    [Fact]
    public void LeaveOneOutDiffersFromTheSimpleFormWhereTheRuleSaysSo()
    {
        // 3 matching answers of 10: min(3/3, 1) = 1 in the simple form, 0.9 in the official one (see the file header of VqaScoring).
        Assert.Equal(0.9, VqaScoring.VqaAccuracy("3", Many(("3", 3), ("4", 7))), 12);
        // 4 or more matches: every leave-one-out subset keeps at least 3, so both forms give 1.
        Assert.Equal(1.0, VqaScoring.VqaAccuracy("3", Many(("3", 4), ("4", 6))), 12);
    }

    public static TheoryData<string, string, string[], double> TextVqaCases() => new()
    {
        { "hyphen becomes a space on both sides", "Coca-Cola", Many(("coca cola", 10)), 1.0 },
        { "both sides normalized: 'two' matches 'two' (VQAv2's rule gives 0 here)", "two", Many(("two", 10)), 1.0 },
        { "'s split off on both sides", "John's", Many(("john's", 10)), 1.0 },
        { "question marks and commas removed first", "yes?", Many(("yes", 7), ("no", 3)), 1.0 },
        { "leave-one-out over normalized answers", "Three", Many(("3", 2), ("three", 1), ("4", 7)), 0.9 },
        { "not among the answers", "blue", Many(("red", 10)), 0.0 },
    };

    [Theory, MemberData(nameof(TextVqaCases))]
    public void TextVqaAccuracyNormalizesBothSides(string @case, string prediction, string[] answers, double expected)
    {
        Assert.True(Math.Abs(VqaScoring.TextVqaAccuracy(prediction, answers) - expected) < 1e-12, $"{@case}: got {VqaScoring.TextVqaAccuracy(prediction, answers)}");
    }

    [Theory]
    [InlineData("Left.", "left", true)]
    [InlineData(" right ", "Right", true)]
    [InlineData("yes...", "yes", true)]
    [InlineData("left side", "left", false)]
    [InlineData("", "left", false)]
    public void ExactMatchIsGqaStyle(string prediction, string answer, bool expected) =>
        Assert.Equal(expected, VqaScoring.ExactMatch(prediction, answer));

    [Theory]
    [InlineData("B", 'B')]
    [InlineData(" C ", 'C')]
    [InlineData("C\n", 'C')]                  // "C. ": not a bare letter once stripped ("C."), but "X. " at the start
    [InlineData(" C\n", null)]                // " C. ": stripped "C.", and its first character is a space
    [InlineData("B. blue", 'B')]
    [InlineData("The answer is C.", 'C')]
    [InlineData("Because of the map, The answer is D", 'D')]
    [InlineData("The answer is E. Or A.", 'E')]
    [InlineData("the answer is D", null)]      // case-sensitive, as LLaVA's
    [InlineData("F", null)]
    [InlineData("(B)", null)]
    [InlineData("A.\nfoo", null)]              // the newline becomes ". ": "A.. foo" starts with neither form
    [InlineData("blue", null)]
    public void ChoiceLetterIsReadAsLlavaReadsIt(string text, char? expected) => Assert.Equal(expected, VqaScoring.ChoiceLetter(text));

    [Fact]
    public void ChoiceScoreComparesLetters()
    {
        Assert.Equal(1.0, VqaScoring.Score(ScoreMetric.Choice, "B. green", "B", null));
        Assert.Equal(1.0, VqaScoring.Score(ScoreMetric.Choice, "B", "The answer is B.", null));
        Assert.Equal(0.0, VqaScoring.Score(ScoreMetric.Choice, "I do not know", "B", null));
        Assert.Throws<ArgumentException>(() => VqaScoring.Score(ScoreMetric.Choice, "B", "green", null));
    }

    [Fact]
    public void AutoMetricFollowsTheGoldAnswersShape()
    {
        Assert.Equal(ScoreMetric.Vqa, VqaScoring.AutoMetric("How many?", null, ["2", "2"]));
        Assert.Equal(ScoreMetric.Choice, VqaScoring.AutoMetric("Which?\nA. red\nB. blue", "B", null));
        Assert.Equal(ScoreMetric.Exact, VqaScoring.AutoMetric("Which?\nA. red\nB. blue", "blue", null));
        Assert.Equal(ScoreMetric.Exact, VqaScoring.AutoMetric("What colour?", "B", null));
        Assert.Equal(ScoreMetric.None, VqaScoring.AutoMetric("What colour?", null, null));
        Assert.Null(VqaScoring.Score(ScoreMetric.None, "x", null, null));
    }
}
