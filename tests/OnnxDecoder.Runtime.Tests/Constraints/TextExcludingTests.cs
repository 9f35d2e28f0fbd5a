using System.Text;
using OnnxDecoder.Runtime.Sampling.Constraints;
using static OnnxDecoder.Runtime.Sampling.Constraints.GrammarNode;

namespace OnnxDecoder.Runtime.Tests.Constraints;

/// <summary>
/// The product of a regular grammar with "does not contain the marker", judged against string.Contains on every text
/// up to a length over a small alphabet; markers that overlap themselves exercise the restarts after a partial match.
/// </summary>
public class TextExcludingTests
{
    private static IEnumerable<string> Texts(string alphabet, int maxLength)
    {
        var level = new List<string> { "" };
        for (int length = 0; length <= maxLength; length++)
        {
            foreach (var text in level) yield return text;
            level = [.. level.SelectMany(t => alphabet.Select(c => t + c))];
        }
    }

    [TestCase("aab")]
    [TestCase("abab")]
    [TestCase("aaa")]
    [TestCase("</parameter>")]
    public void Any_text_without_the_marker_is_exactly_what_contains_does_not_find(string marker)
    {
        string alphabet = new([.. marker.Distinct().Append('x')]);
        var any = Repeat(Bytes(ByteSet.Of([.. Encoding.ASCII.GetBytes(alphabet)])), 0, -1);
        var matcher = new GrammarMatcher(new Grammar().WithRoot(TextExcluding.Intersect(any, marker)), ByteSet.All);
        int maxLength = marker.Length > 4 ? marker.Length + 1 : 8;
        var texts = marker.Length > 4
            ? [marker, "x" + marker, marker[..^1], "<" + marker, marker[..5] + marker, marker + "x"]
            : Texts(alphabet, maxLength);
        foreach (var text in texts)
            Assert.That(matcher.Matches(Encoding.ASCII.GetBytes(text)), Is.EqualTo(!text.Contains(marker, StringComparison.Ordinal)),
                $"'{text}' with marker '{marker}'");
    }

    [Test]
    public void A_length_bound_is_kept_and_a_grammar_that_needs_the_marker_is_refused()
    {
        var bounded = Repeat(Bytes(ByteSet.Of((byte)'a', (byte)'b')), 2, 5);
        var matcher = new GrammarMatcher(new Grammar().WithRoot(TextExcluding.Intersect(bounded, "bb")), ByteSet.All);
        foreach (var text in Texts("ab", 7))
            Assert.That(matcher.Matches(Encoding.ASCII.GetBytes(text)), Is.EqualTo(text.Length is >= 2 and <= 5 && !text.Contains("bb")), text);
        Assert.Throws<GrammarException>(() => TextExcluding.Intersect(Seq(Literal("x"), Literal("bb")), "bb"));
    }
}
