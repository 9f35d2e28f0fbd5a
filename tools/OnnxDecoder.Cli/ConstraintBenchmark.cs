using System.Diagnostics;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Cli;

/// <summary>
/// `onnx-decoder bench --json-schema FILE`: greedy generation through <see cref="Generator"/> with
/// and without the schema's constraint, alternating run by run in one process, after a warm-up of
/// each; the unconstrained run generates as many tokens as the constrained one before it. Reports decode tokens/s both ways (wall time from the first sampled token to the last, so
/// the constraint's work counts) and the constraint's own cost per token (mask + advance), median
/// and p99, also as a fraction of the unconstrained decode step.
/// </summary>
public static class ConstraintBenchmark
{
    public static JsonObject Run(string modelFolder, string schemaPath, int promptTokens, int genTokens, int runs, ExecutionProviderOptions providers)
    {
        if (promptTokens < 1 || genTokens < 2 || runs < 1) throw new ArgumentException("bench needs --prompt-tokens >= 1, --gen-tokens >= 2 and --runs >= 1");
        if (!File.Exists(schemaPath)) throw new FileNotFoundException($"--json-schema {schemaPath}: no such file");
        var folder = ModelFolder.Open(modelFolder);
        int maxLength = promptTokens + genTokens;
        if (maxLength > folder.ContextLength) throw new ArgumentException($"--prompt-tokens + --gen-tokens ({maxLength}) exceed the model's context length ({folder.ContextLength})");
        var constraint = new TimedConstraint(GrammarConstraint.JsonSchema(File.ReadAllText(schemaPath), Path.GetFileName(schemaPath)));
        using var session = new DecoderSession(modelFolder, new DecoderSessionOptions { Providers = providers, MaxLength = maxLength });
        var tokenizer = TextTokenizer.Load(folder.Directory, folder.BosTokenId);
        var generator = new Generator(session, tokenizer);
        var prompt = new int[promptTokens];
        prompt[0] = folder.BosTokenId;
        for (int i = 1; i < promptTokens; i++)
        {
            int id = 3 + (int)(i * 131L % (folder.VocabSize - 3));
            while (folder.EosTokenIds.Contains(id)) id = (id + 1) % folder.VocabSize;
            prompt[i] = id;
        }

        var buildClock = Stopwatch.StartNew();
        constraint.Inner.MatcherFor(TokenTrie.For(tokenizer, session.VocabSize));
        double setupMs = buildClock.Elapsed.TotalMilliseconds;

        (double TokensPerSecond, int Tokens) Once(ILogitsConstraint? with, int tokens)
        {
            var options = new GenerationOptions { MaxNewTokens = tokens, EosTokenIds = [], Constraint = with };
            var clock = Stopwatch.StartNew();
            var result = generator.Generate(prompt, options);
            double decodeMs = clock.Elapsed.TotalMilliseconds - result.Timings.TimeToFirstTokenMs;
            int steps = result.TokenIds.Length - 1;
            return (steps > 0 && decodeMs > 0 ? steps / (decodeMs / 1000) : 0, result.TokenIds.Length);
        }

        Once(null, genTokens);
        Once(constraint, genTokens);
        constraint.Costs.Clear();
        long walksBefore = constraint.Inner.TrieWalks;
        var plain = new List<double>();
        var constrained = new List<(double TokensPerSecond, int Tokens)>();
        for (int run = 0; run < runs; run++)
        {
            // The schema may end the output early: the unconstrained run then generates as many tokens, over the same positions.
            constrained.Add(Once(constraint, genTokens));
            plain.Add(Once(null, Math.Max(2, constrained[^1].Tokens)).TokensPerSecond);
        }
        var costs = constraint.Costs.Order().ToList();
        double plainRate = Benchmark.Median(plain), constrainedRate = Benchmark.Median(constrained.Select(c => c.TokensPerSecond));
        double median = costs.Count > 0 ? costs[costs.Count / 2] : 0, p99 = costs.Count > 0 ? costs[Math.Min(costs.Count - 1, (int)(costs.Count * 0.99))] : 0;
        return new JsonObject
        {
            ["model"] = Path.GetFullPath(modelFolder),
            ["schema"] = Path.GetFullPath(schemaPath),
            ["vocab_size"] = session.VocabSize,
            ["prompt_tokens"] = promptTokens,
            ["gen_tokens"] = genTokens,
            ["runs"] = runs,
            ["constrained_tokens_per_run"] = Benchmark.Median(constrained.Select(c => (double)c.Tokens)),
            ["decode_tokens_per_s_unconstrained"] = Math.Round(plainRate, 1),
            ["decode_tokens_per_s_constrained"] = Math.Round(constrainedRate, 1),
            ["ratio"] = plainRate > 0 ? Math.Round(constrainedRate / plainRate, 3) : 0,
            ["constraint_us_per_token_median"] = Math.Round(median, 1),
            ["constraint_us_per_token_p99"] = Math.Round(p99, 1),
            ["constraint_fraction_of_decode_step"] = plainRate > 0 ? Math.Round(median / (1e6 / plainRate), 4) : 0,
            ["constraint_setup_ms"] = Math.Round(setupMs, 1),
            ["constraint_trie_walks_per_token"] = costs.Count > 0 ? Math.Round((double)(constraint.Inner.TrieWalks - walksBefore) / costs.Count, 3) : 0,
        };
    }

    public static string Describe(JsonObject r) =>
        $"{r["model"]} (vocabulary {r["vocab_size"]}) under {r["schema"]}, median of {r["runs"]} runs:\n" +
        $"  decode {r["decode_tokens_per_s_unconstrained"]} tok/s unconstrained, {r["decode_tokens_per_s_constrained"]} tok/s constrained (x{r["ratio"]}; {r["constrained_tokens_per_run"]} tokens per constrained run)\n" +
        $"  constraint per token: median {r["constraint_us_per_token_median"]} us, p99 {r["constraint_us_per_token_p99"]} us ({r["constraint_fraction_of_decode_step"]} of an unconstrained decode step); setup {r["constraint_setup_ms"]} ms; " +
        $"{r["constraint_trie_walks_per_token"]} trie walks per token (the rest memoised)";

    /// <summary>Wraps a constraint and records the microseconds of each token's mask + advance.</summary>
    private sealed class TimedConstraint(GrammarConstraint inner) : ILogitsConstraint
    {
        public GrammarConstraint Inner { get; } = inner;
        public List<double> Costs { get; } = [];

        public ISequenceConstraint Begin(TextTokenizer tokenizer, int vocabSize, IReadOnlyList<int> eosTokenIds) =>
            new Timed(Inner.Begin(tokenizer, vocabSize, eosTokenIds), Costs);

        private sealed class Timed(ISequenceConstraint inner, List<double> costs) : ISequenceConstraint
        {
            private long _maskTicks;
            public bool IsComplete => inner.IsComplete;
            public bool MustEnd => inner.MustEnd;
            public int MinTokensToFinish => inner.MinTokensToFinish;

            public void Mask(Span<float> logits, int remainingTokens)
            {
                long start = Stopwatch.GetTimestamp();
                inner.Mask(logits, remainingTokens);
                _maskTicks = Stopwatch.GetTimestamp() - start;
            }

            public void Advance(int tokenId)
            {
                long start = Stopwatch.GetTimestamp();
                inner.Advance(tokenId);
                costs.Add((_maskTicks + Stopwatch.GetTimestamp() - start) * 1e6 / Stopwatch.Frequency);
            }
        }
    }
}
