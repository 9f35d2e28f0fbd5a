using System.Text;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tools;

namespace OnnxDecoder.Runtime.Tests.Tools;

/// <summary>The sampling loop of the tool-call grammar tests: random logits and draws under a forced-call grammar, and the
/// calls a forced-call stream assembles from the reply's pieces.</summary>
internal static class ToolCallSampling
{
    /// <summary>
    /// Samples under <paramref name="sequence"/> within <paramref name="budget"/> tokens: random logits in [-4, 4), the
    /// best allowed token three draws in four, a random allowed one otherwise; stops at <paramref name="eos"/> or when the
    /// grammar must end. Returns the reply and its text piece by piece (UTF-8 decoded across token boundaries).
    /// </summary>
    public static (string Reply, List<string> Pieces) Sample(ISequenceConstraint sequence, TokenTrie trie, int vocab, Random random, int budget, int eos,
        string variant)
    {
        var logits = new float[vocab];
        var text = new List<byte>();
        var pieces = new List<string>();
        var utf8 = Encoding.UTF8.GetDecoder();
        for (int used = 0; used < budget && !sequence.MustEnd; used++)
        {
            for (int i = 0; i < logits.Length; i++) logits[i] = (float)(random.NextDouble() * 8 - 4);
            sequence.Mask(logits, budget - used);
            var allowed = Enumerable.Range(0, logits.Length).Where(i => !float.IsNegativeInfinity(logits[i])).ToList();
            Assert.That(allowed, Is.Not.Empty, $"{variant}: dead end after '{Encoding.UTF8.GetString([.. text])}'");
            int token = random.Next(4) == 0 ? allowed[random.Next(allowed.Count)] : allowed.MaxBy(i => logits[i]);
            sequence.Advance(token);
            if (token == eos) break;
            var bytes = trie.TokenBytes[token]!;
            text.AddRange(bytes);
            var chars = new char[utf8.GetCharCount(bytes, flush: false)];
            utf8.GetChars(bytes, chars, flush: false);
            pieces.Add(new string(chars));
        }
        Assert.That(sequence.IsComplete, Is.True, variant);
        return (Encoding.UTF8.GetString([.. text]), pieces);
    }

    /// <summary>Pushes <paramref name="pieces"/> through <paramref name="stream"/> and asserts that the streamed names and
    /// argument pieces add up to the parsed <paramref name="calls"/>.</summary>
    public static void AssertStreamAddsUp(ForcedCallStream stream, IEnumerable<string> pieces, IReadOnlyList<ToolCall> calls, string variant)
    {
        var names = new List<string>();
        var arguments = new List<StringBuilder>();
        foreach (string piece in pieces)
            foreach (var delta in stream.Push(piece))
            {
                if (delta.Name is not null) { Assert.That(delta.Index, Is.EqualTo(names.Count), variant); names.Add(delta.Name); arguments.Add(new()); }
                else arguments[delta.Index].Append(delta.ArgumentsPiece);
            }
        Assert.That(names, Is.EqualTo(calls.Select(c => c.Name)), variant);
        Assert.That(arguments.Select(a => a.ToString()), Is.EqualTo(calls.Select(c => c.ArgumentsJson)), variant);
    }
}
