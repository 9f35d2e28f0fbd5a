using System.Runtime.CompilerServices;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Sampling.Constraints;

/// <summary>
/// A constraint on what a sequence may generate, set on <see cref="GenerationOptions.Constraint"/>
/// and shared by every sequence that uses it; each sequence gets its own small state from
/// <see cref="Begin"/>.
/// </summary>
public interface ILogitsConstraint
{
    /// <summary>Starts one sequence. <paramref name="eosTokenIds"/> end it; they are allowed only where the grammar may end.</summary>
    ISequenceConstraint Begin(TextTokenizer tokenizer, int vocabSize, IReadOnlyList<int> eosTokenIds);
}

/// <summary>One sequence's place in the constraint.</summary>
public interface ISequenceConstraint
{
    /// <summary>Sets the logits of disallowed tokens to -infinity. <paramref name="remainingTokens"/>:
    /// tokens the sequence may still generate, this one included; tokens after which the grammar
    /// could not finish within that budget are disallowed too.</summary>
    void Mask(Span<float> logits, int remainingTokens);
    /// <summary>Moves past the chosen token (an allowed one).</summary>
    void Advance(int tokenId);
    /// <summary>The output so far is a whole sentence of the grammar.</summary>
    bool IsComplete { get; }
    /// <summary>Complete, and no token may follow: the sequence ends here.</summary>
    bool MustEnd { get; }
    /// <summary>The fewest tokens that still complete the output.</summary>
    int MinTokensToFinish { get; }
}

/// <summary>
/// Constrained decoding by a byte <see cref="Grammar"/>: at each step the tokens whose bytes the
/// grammar accepts from the sequence's state are found by walking the tokenizer's
/// <see cref="TokenTrie"/> beside the recognizer, and the mask is memoised per recognizer state.
/// No dead end: every state kept can still finish with one-byte tokens (see
/// <see cref="GrammarMatcher"/>), and a token is allowed only if the rest still fits the budget,
/// so the output is complete when the sequence stops, by EOS or by its token budget.
/// </summary>
public sealed class GrammarConstraint(Grammar grammar) : ILogitsConstraint
{
    private readonly ConditionalWeakTable<TokenTrie, GrammarMatcher> _matchers = new();
    private long _trieWalks;

    public Grammar Grammar { get; } = grammar;
    /// <summary>Masks computed by walking the trie (a state's first visit, or a step near the budget); the rest were memoised.</summary>
    public long TrieWalks => Interlocked.Read(ref _trieWalks);

    /// <summary>Any JSON value.</summary>
    public static GrammarConstraint Json() => new(JsonGrammar.AnyValue());
    /// <summary>JSON that satisfies the schema (see <see cref="JsonSchemaCompiler"/> for the keywords served).</summary>
    public static GrammarConstraint JsonSchema(string schemaJson, string source = "schema") => new(JsonSchemaCompiler.Compile(schemaJson, source));
    /// <summary>Text that the whole pattern matches (see <see cref="RegexGrammar"/> for the subset).</summary>
    public static GrammarConstraint Regex(string pattern) => new(RegexGrammar.Compile(pattern));
    /// <summary>One call {"name", "arguments"} of a function in an OpenAI tools list.</summary>
    public static GrammarConstraint ToolCall(string toolsJson, string? only = null) => new(ToolCallGrammar.Compile(toolsJson, only));

    /// <summary>The recognizer for this grammar over <paramref name="trie"/>'s one-byte tokens (built once per tokenizer).</summary>
    public GrammarMatcher MatcherFor(TokenTrie trie) => _matchers.GetValue(trie, t => new GrammarMatcher(Grammar, t.SingleByteTokens));

    public ISequenceConstraint Begin(TextTokenizer tokenizer, int vocabSize, IReadOnlyList<int> eosTokenIds)
    {
        var trie = TokenTrie.For(tokenizer, vocabSize);
        return new Sequence(this, trie, MatcherFor(trie), eosTokenIds);
    }

    /// <summary>The tokens allowed from one state; memoised on the state when computed without a budget.</summary>
    private sealed class TokenMask(ulong[] allowed, int mostBytesToFinishAfter)
    {
        public ulong[] Allowed { get; } = allowed;
        /// <summary>The largest BytesToFinish over the states the allowed tokens lead to (-1: none).</summary>
        public int MostBytesToFinishAfter { get; } = mostBytesToFinishAfter;
    }

    internal sealed class Sequence(GrammarConstraint owner, TokenTrie trie, GrammarMatcher matcher, IReadOnlyList<int> eos) : ISequenceConstraint
    {
        private readonly Stack<(int Node, MatchState State)> _walk = new();
        public MatchState State { get; private set; } = matcher.Start;

        public bool IsComplete => State.IsComplete;
        public bool MustEnd => State.IsComplete && !State.CanContinue;
        public int MinTokensToFinish => State.BytesToFinish;

        public void Mask(Span<float> logits, int remainingTokens)
        {
            var mask = State.Mask as TokenMask;
            if (mask is null)
            {
                mask = Compute(int.MaxValue);
                State.Mask = mask;
            }
            if (mask.MostBytesToFinishAfter > remainingTokens - 1) mask = Compute(remainingTokens - 1); // near the budget: closing paths only
            Span<float> eosLogits = stackalloc float[eos.Count];
            for (int i = 0; i < eos.Count; i++) eosLogits[i] = (uint)eos[i] < (uint)logits.Length ? logits[eos[i]] : 0;
            var allowed = mask.Allowed;
            for (int word = 0; word * 64 < logits.Length; word++)
            {
                ulong bits = word < allowed.Length ? allowed[word] : 0;
                if (bits == ulong.MaxValue) continue;
                int start = word * 64, count = Math.Min(64, logits.Length - start);
                if (bits == 0)
                {
                    logits.Slice(start, count).Fill(float.NegativeInfinity); // most words in structural states: vectorised
                    continue;
                }
                // Only the refused ids of a mixed word.
                for (ulong refused = ~bits; refused != 0; refused &= refused - 1)
                {
                    int bit = System.Numerics.BitOperations.TrailingZeroCount(refused);
                    if (bit >= count) break;
                    logits[start + bit] = float.NegativeInfinity;
                }
            }
            for (int i = 0; i < eos.Count; i++)
                if ((uint)eos[i] < (uint)logits.Length) logits[eos[i]] = State.IsComplete ? eosLogits[i] : float.NegativeInfinity;
        }

        public void Advance(int tokenId)
        {
            if (eos.Contains(tokenId))
            {
                if (!State.IsComplete) throw new InvalidOperationException($"end of sequence before the {matcher.Description} output is complete");
                return;
            }
            var bytes = (uint)tokenId < (uint)trie.TokenBytes.Length ? trie.TokenBytes[tokenId] : null;
            State = (bytes is null ? null : matcher.Advance(State, bytes))
                ?? throw new InvalidOperationException($"token {tokenId} is not allowed by the {matcher.Description} here: it was chosen without the constraint's mask");
        }

        // Walks the trie beside the recognizer: a refused prefix prunes its whole subtree. The hot
        // loop reads each state's memoised successor directly (the matcher is asked only on a miss),
        // over an explicit stack of (trie node, state) pairs.
        private TokenMask Compute(int bytesBudgetAfter)
        {
            Interlocked.Increment(ref owner._trieWalks);
            var allowed = new ulong[(trie.TokenBytes.Length + 63) / 64];
            int most = -1;
            var edgeByte = trie.EdgeByte;
            var firstChild = trie.FirstChild;
            var childCount = trie.ChildCount;
            var tokenCount = trie.TokenCount;
            _walk.Clear();
            _walk.Push((0, State));
            while (_walk.Count > 0)
            {
                var (node, state) = _walk.Pop();
                int first = firstChild[node], last = first + childCount[node];
                for (int child = first; child < last; child++)
                {
                    byte b = edgeByte[child];
                    var next = state.Next?[b];
                    if (next is null) next = matcher.Advance(state, b) ?? MatchState.Dead;
                    if (ReferenceEquals(next, MatchState.Dead)) continue;
                    if (tokenCount[child] > 0 && next.BytesToFinish <= bytesBudgetAfter)
                    {
                        for (int t = trie.FirstToken[child], end = t + tokenCount[child]; t < end; t++)
                        {
                            int id = trie.TokenIds[t];
                            allowed[id >> 6] |= 1UL << (id & 63);
                        }
                        most = Math.Max(most, next.BytesToFinish);
                    }
                    if (childCount[child] > 0) _walk.Push((child, next));
                }
            }
            return new TokenMask(allowed, most);
        }
    }
}
