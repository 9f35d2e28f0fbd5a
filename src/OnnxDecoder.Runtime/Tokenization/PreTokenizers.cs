using System.Globalization;
using System.Text;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>A piece of normalized text on its way to the model. <see cref="AtStart"/>: the piece
/// begins at offset 0 of the original text (Metaspace's "first" prepend scheme asks).</summary>
public readonly record struct TextPiece(string Text, bool AtStart);

/// <summary>tokenizer.json "pre_tokenizer": splits (and may rewrite) pieces. Empty pieces are dropped.</summary>
public interface IPreTokenizer
{
    void PreTokenize(List<TextPiece> pieces);
}

/// <summary>How a split keeps its delimiters (Hugging Face's SplitDelimiterBehavior).</summary>
public enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>The split step every pre-tokenizer shares: the text is cut into runs that match and
/// runs that do not, then <see cref="SplitBehavior"/> decides what each run becomes.</summary>
public static class PieceSplitter
{
    /// <summary>Replaces each piece with the pieces <paramref name="split"/> cuts it into.</summary>
    public static void SplitAll(List<TextPiece> pieces, Func<string, List<(int Start, int End)>> findMatches, SplitBehavior behavior, bool invert = false)
    {
        var result = new List<TextPiece>(pieces.Count * 2);
        foreach (var piece in pieces) Split(piece, findMatches(piece.Text), behavior, invert, result);
        pieces.Clear();
        pieces.AddRange(result);
    }

    public static void Split(TextPiece piece, List<(int Start, int End)> matches, SplitBehavior behavior, bool invert, List<TextPiece> output)
    {
        string text = piece.Text;
        if (text.Length == 0) return;
        // Runs covering the text: (start, end, is a match).
        var runs = new List<(int Start, int End, bool Match)>(matches.Count * 2 + 1);
        int previous = 0;
        foreach (var (start, end) in matches)
        {
            if (previous != start) runs.Add((previous, start, invert));
            runs.Add((start, end, !invert));
            previous = end;
        }
        if (previous != text.Length) runs.Add((previous, text.Length, invert));

        var kept = new List<(int Start, int End)>(runs.Count);
        bool previousMatch = false;
        switch (behavior)
        {
            case SplitBehavior.Removed:
                foreach (var r in runs) if (!r.Match) kept.Add((r.Start, r.End));
                break;
            case SplitBehavior.Isolated:
                foreach (var r in runs) kept.Add((r.Start, r.End));
                break;
            case SplitBehavior.Contiguous:
                foreach (var r in runs)
                {
                    if (r.Match == previousMatch && kept.Count > 0) kept[^1] = (kept[^1].Start, r.End);
                    else kept.Add((r.Start, r.End));
                    previousMatch = r.Match;
                }
                break;
            case SplitBehavior.MergedWithPrevious:
                foreach (var r in runs)
                {
                    if (r.Match && !previousMatch && kept.Count > 0) kept[^1] = (kept[^1].Start, r.End);
                    else kept.Add((r.Start, r.End));
                    previousMatch = r.Match;
                }
                break;
            case SplitBehavior.MergedWithNext:
                for (int i = runs.Count - 1; i >= 0; i--)
                {
                    var r = runs[i];
                    if (r.Match && !previousMatch && kept.Count > 0) kept[^1] = (r.Start, kept[^1].End);
                    else kept.Add((r.Start, r.End));
                    previousMatch = r.Match;
                }
                kept.Reverse();
                break;
        }
        foreach (var (start, end) in kept)
            if (end > start) output.Add(new TextPiece(start == 0 && end == text.Length ? text : text[start..end], piece.AtStart && start == 0));
    }

    /// <summary>Matches of single characters (code points) that satisfy <paramref name="predicate"/>.</summary>
    public static List<(int Start, int End)> CharMatches(string text, Func<Rune, bool> predicate)
    {
        var matches = new List<(int, int)>();
        for (int i = 0; i < text.Length;)
        {
            Rune.DecodeFromUtf16(text.AsSpan(i), out var rune, out int length);
            if (predicate(rune)) matches.Add((i, i + length));
            i += length;
        }
        return matches;
    }
}

/// <summary>Split: a string or regex pattern with a delimiter behavior, optionally inverted.</summary>
public sealed class SplitPreTokenizer(OnigPattern pattern, SplitBehavior behavior, bool invert) : IPreTokenizer
{
    public void PreTokenize(List<TextPiece> pieces) => PieceSplitter.SplitAll(pieces, pattern.Matches, behavior, invert);
}

/// <summary>ByteLevel: optional leading space, GPT-2's split (use_regex), then every UTF-8 byte
/// becomes its printable stand-in character (GPT-2's byte-to-unicode table).</summary>
public sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : IPreTokenizer
{
    /// <summary>GPT-2's pre-tokenizer split: contractions, letters, numbers, other, whitespace.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    private static readonly OnigPattern Gpt2 = OnigPattern.Create(Gpt2Pattern);

    public void PreTokenize(List<TextPiece> pieces)
    {
        if (addPrefixSpace)
            for (int i = 0; i < pieces.Count; i++)
                if (!pieces[i].Text.StartsWith(' ')) pieces[i] = pieces[i] with { Text = " " + pieces[i].Text };
        if (useRegex) PieceSplitter.SplitAll(pieces, Gpt2.Matches, SplitBehavior.Isolated);
        for (int i = 0; i < pieces.Count; i++) pieces[i] = pieces[i] with { Text = ByteLevelAlphabet.Encode(pieces[i].Text) };
    }
}

/// <summary>Metaspace: spaces become the replacement character (▁), which is prepended per the
/// scheme (always, first piece of the text only, never); split keeps each ▁ with the word after it.</summary>
public sealed class MetaspacePreTokenizer(char replacement, MetaspacePreTokenizer.Prepend scheme, bool split) : IPreTokenizer
{
    public enum Prepend { Always, First, Never }

    public char Replacement => replacement;
    public Prepend Scheme => scheme;

    public void PreTokenize(List<TextPiece> pieces)
    {
        for (int i = 0; i < pieces.Count; i++)
        {
            var piece = pieces[i];
            string text = piece.Text.Replace(' ', replacement);
            if (!text.StartsWith(replacement) && (scheme == Prepend.Always || (scheme == Prepend.First && piece.AtStart))) text = replacement + text;
            pieces[i] = piece with { Text = text };
        }
        if (split) PieceSplitter.SplitAll(pieces, t => PieceSplitter.CharMatches(t, r => r.Value == replacement), SplitBehavior.MergedWithNext);
    }
}

/// <summary>Digits: numbers apart from the rest, each digit alone when individual_digits.</summary>
public sealed class DigitsPreTokenizer(bool individualDigits) : IPreTokenizer
{
    public void PreTokenize(List<TextPiece> pieces) =>
        PieceSplitter.SplitAll(pieces, t => PieceSplitter.CharMatches(t, Rune.IsNumber), individualDigits ? SplitBehavior.Isolated : SplitBehavior.Contiguous);
}

/// <summary>Punctuation: ASCII and Unicode punctuation characters split off per the behavior.</summary>
public sealed class PunctuationPreTokenizer(SplitBehavior behavior) : IPreTokenizer
{
    public void PreTokenize(List<TextPiece> pieces) =>
        PieceSplitter.SplitAll(pieces, t => PieceSplitter.CharMatches(t, IsPunctuation), behavior);

    internal static bool IsPunctuation(Rune rune) =>
        (rune.IsAscii && char.IsAsciiLetterOrDigit((char)rune.Value) is false && rune.Value is > 32 and < 127) || Rune.IsPunctuation(rune);
}

/// <summary>Whitespace: runs of word characters and runs of other non-space characters.</summary>
public sealed class WhitespacePreTokenizer : IPreTokenizer
{
    private static readonly OnigPattern Words = OnigPattern.Create(@"\w+|[^\w\s]+");

    public void PreTokenize(List<TextPiece> pieces) => PieceSplitter.SplitAll(pieces, Words.Matches, SplitBehavior.Removed, invert: true);
}

/// <summary>WhitespaceSplit: splits on whitespace, which is removed.</summary>
public sealed class WhitespaceSplitPreTokenizer : IPreTokenizer
{
    public void PreTokenize(List<TextPiece> pieces) => PieceSplitter.SplitAll(pieces, t => PieceSplitter.CharMatches(t, Rune.IsWhiteSpace), SplitBehavior.Removed);
}

/// <summary>CharDelimiterSplit: splits on one character, which is removed.</summary>
public sealed class CharDelimiterPreTokenizer(Rune delimiter) : IPreTokenizer
{
    public void PreTokenize(List<TextPiece> pieces) => PieceSplitter.SplitAll(pieces, t => PieceSplitter.CharMatches(t, r => r == delimiter), SplitBehavior.Removed);
}

public sealed class SequencePreTokenizer(IReadOnlyList<IPreTokenizer> preTokenizers) : IPreTokenizer
{
    public void PreTokenize(List<TextPiece> pieces)
    {
        foreach (var preTokenizer in preTokenizers) preTokenizer.PreTokenize(pieces);
    }
}

/// <summary>GPT-2's reversible map between bytes and printable characters: printable Latin-1 bytes
/// stand for themselves, the other 68 bytes for U+0100 onwards in byte order.</summary>
public static class ByteLevelAlphabet
{
    private static readonly char[] ByteToChar = BuildTable();
    private static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, (byte)b)).ToDictionary(p => p.c, p => p.Item2);

    private static char[] BuildTable()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            table[b] = (b is >= '!' and <= '~') || (b is >= 0xA1 and <= 0xAC) || (b is >= 0xAE and <= 0xFF) ? (char)b : (char)next++;
        return table;
    }

    /// <summary>The text's UTF-8 bytes as stand-in characters.</summary>
    public static string Encode(string text)
    {
        if (!text.AsSpan().ContainsAnyExceptInRange('\0', '\x7F'))
            return string.Create(text.Length, text, static (chars, ascii) =>
            {
                for (int i = 0; i < chars.Length; i++) chars[i] = ByteToChar[ascii[i]];
            });
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, static (chars, b) =>
        {
            for (int i = 0; i < b.Length; i++) chars[i] = ByteToChar[b[i]];
        });
    }

    /// <summary>Appends the bytes a token stands for, or false when some character is not a stand-in.</summary>
    public static bool TryDecode(string token, List<byte> output)
    {
        int mark = output.Count;
        foreach (char c in token)
        {
            if (!CharToByte.TryGetValue(c, out byte b))
            {
                output.RemoveRange(mark, output.Count - mark);
                return false;
            }
            output.Add(b);
        }
        return true;
    }

    public static bool IsStandIn(char c) => CharToByte.ContainsKey(c);
}
