using System.Text;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime;

/// <summary>
/// What one sequence under generation has produced and when it stops: sampling over its history,
/// EOS, max tokens, stop strings (text that could still become one is held back), full context,
/// and UTF-8-safe text. Shared by <see cref="Generator"/> and <see cref="ContinuousBatcher"/>, so a
/// sequence decoded alone and one decoded in a batch follow the same rules.
/// </summary>
internal sealed class GenerationState
{
    private readonly GenerationOptions _options;
    private readonly IReadOnlyList<int> _eos;
    private readonly Sampler _sampler;
    private readonly IncrementalDetokenizer? _detokenizer; // null: token ids only (no tokenizer files), no text
    private readonly List<int> _history;      // every token the model has seen, for repetition penalty
    private readonly StringBuilder _text = new();
    private int _released;                    // characters of text already emitted
    private readonly ISequenceConstraint? _constraint;
    private readonly float[]? _constrained;   // [vocab] the logits after the constraint's mask
    private bool _grammarEnded;               // the constraint ended the sequence after its last token

    /// <param name="context">The tokens in the cache before this generation's input (a conversation's earlier turns).</param>
    /// <param name="input">The tokens this generation appends before sampling (the prompt).</param>
    public GenerationState(GenerationOptions options, IReadOnlyList<int> defaultEos, TextTokenizer? tokenizer, int vocabSize, IEnumerable<int> context, IReadOnlyList<int> input)
    {
        if (input.Count == 0) throw new ArgumentException("the prompt is empty: encode at least one token (BOS)", nameof(input));
        if (options.MaxNewTokens <= 0) throw new ArgumentOutOfRangeException(nameof(options), options.MaxNewTokens, "max new tokens must be positive");
        _options = options;
        _eos = options.EosTokenIds ?? defaultEos;
        _sampler = new Sampler(options.Sampling, vocabSize);
        _history = [.. context, .. input];
        if (tokenizer is not null) _detokenizer = new IncrementalDetokenizer(tokenizer, _history);
        else if (options.StopStrings.Count > 0 || options.Constraint is not null)
            throw new ArgumentException("stop strings and constraints work on text: they need the model folder's tokenizer files", nameof(options));
        if (options.Constraint is { } constraint)
        {
            _constraint = constraint.Begin(tokenizer!, vocabSize, _eos);
            _constrained = new float[vocabSize];
            if (_constraint.MinTokensToFinish > options.MaxNewTokens)
                throw new ArgumentException($"max new tokens {options.MaxNewTokens} is too few for the constraint: its shortest output needs {_constraint.MinTokensToFinish} tokens", nameof(options));
        }
    }

    public List<int> Generated { get; } = [];
    public string Text => _text.ToString();
    /// <summary>Why generation ended; null while it goes on.</summary>
    public StopReason? StopReason { get; private set; }
    /// <summary>The last sampled token when it was not run through the model (a later turn feeds it first).</summary>
    public int? Pending => StopReason is Runtime.StopReason.StopString or Runtime.StopReason.MaxTokens || _grammarEnded ? Generated[^1] : null;

    /// <summary>
    /// Samples the next token from <paramref name="logits"/> and applies the stop rules;
    /// <paramref name="positionsUsed"/> counts the sequence's positions in the cache. Returns the
    /// piece to emit (null when EOS ends the sequence). While <see cref="StopReason"/> stays null the
    /// returned token must be run through the model next.
    /// </summary>
    public GeneratedToken? Next(ReadOnlySpan<float> logits, int positionsUsed, int maxLength)
    {
        if (StopReason is not null) throw new InvalidOperationException("this sequence has already stopped");
        var history = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_history);
        int next;
        if (_constraint is not null)
        {
            // The budget counts this token: the options' limit, and the positions the cache has left.
            int remaining = Math.Min(_options.MaxNewTokens - Generated.Count, maxLength - positionsUsed + 1);
            if (_constraint.MinTokensToFinish > remaining)
                throw new ContextFullException($"the constrained output needs {_constraint.MinTokensToFinish} more tokens but the context has room for {remaining}: shorten the prompt or export with a larger --max-length");
            var masked = _constrained.AsSpan(0, logits.Length);
            logits.CopyTo(masked);
            _constraint.Mask(masked, remaining);
            next = _sampler.Next(masked, history);
            if (float.IsNegativeInfinity(masked[next])) next = Sampler.ArgMax(masked); // a draw's rounding may land past the allowed tokens
            _constraint.Advance(next);
        }
        else next = _sampler.Next(logits, history);
        return Accept(next, positionsUsed, maxLength);
    }

    /// <summary>The sampler and the history it reads, for speculative verification (which computes
    /// the distributions itself and then hands each chosen token to <see cref="Accept"/>).</summary>
    public Sampler Sampler => _sampler;
    public ReadOnlySpan<int> History => System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_history);
    public bool HasConstraint => _constraint is not null;

    /// <summary>Applies the stop rules to a token chosen outside <see cref="Next"/> (a verified draft);
    /// same contract as <see cref="Next"/>. Constrained sequences choose through <see cref="Next"/> only.</summary>
    public GeneratedToken? Accept(int next, int positionsUsed, int maxLength)
    {
        if (StopReason is not null) throw new InvalidOperationException("this sequence has already stopped");
        if (_eos.Contains(next))
        {
            StopReason = Runtime.StopReason.Eos;
            return null;
        }
        Generated.Add(next);
        if (_detokenizer is not null) _text.Append(_detokenizer.Add(next));
        if (_options.StopStrings.Count > 0 && CutAtStopString(_text, _options.StopStrings))
        {
            StopReason = Runtime.StopReason.StopString;
            return new GeneratedToken(next, _text.Length > _released ? _text.ToString(_released, _text.Length - _released) : "");
        }
        int safe = _text.Length - StopPrefixLength(_text, _options.StopStrings); // hold back a tail that could still grow into a stop string
        var piece = new GeneratedToken(next, safe > _released ? _text.ToString(_released, safe - _released) : "");
        _released = Math.Max(_released, safe);
        if (_constraint is { MustEnd: true })
        {
            // Nothing may follow: end as EOS would, without running the model for it.
            StopReason = Runtime.StopReason.Eos;
            _grammarEnded = true;
        }
        else if (Generated.Count >= _options.MaxNewTokens) StopReason = Runtime.StopReason.MaxTokens;
        else if (positionsUsed >= maxLength) StopReason = Runtime.StopReason.ContextFull;
        else _history.Add(next);
        return piece;
    }

    /// <summary>After the sequence stopped: the text held back until the end, if any (TokenId -1).</summary>
    public GeneratedToken? Tail()
    {
        if (StopReason is null or Runtime.StopReason.StopString) return null;
        if (_detokenizer is not null) _text.Append(_detokenizer.Flush());
        if (_text.Length <= _released) return null;
        var tail = new GeneratedToken(-1, _text.ToString(_released, _text.Length - _released));
        _released = _text.Length;
        return tail;
    }

    /// <summary>Length of the longest end of <paramref name="text"/> that begins some stop string.</summary>
    private static int StopPrefixLength(StringBuilder text, IReadOnlyList<string> stops)
    {
        int longest = 0;
        foreach (var stop in stops)
            for (int length = Math.Min(stop.Length - 1, text.Length); length > longest; length--)
            {
                bool match = true;
                for (int i = 0; i < length && match; i++) match = text[text.Length - length + i] == stop[i];
                if (match) { longest = length; break; }
            }
        return longest;
    }

    private static bool CutAtStopString(StringBuilder text, IReadOnlyList<string> stops)
    {
        string current = text.ToString();
        int cut = -1;
        foreach (var stop in stops)
        {
            if (stop.Length == 0) continue;
            int at = current.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (cut < 0 || at < cut)) cut = at;
        }
        if (cut < 0) return false;
        text.Length = cut;
        return true;
    }
}
