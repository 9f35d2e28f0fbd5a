using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Cli;

/// <summary>
/// `onnx-decoder bench --json-schema FILE`: greedy generation through <see cref="Generator"/> with
/// and without the schema's constraint, alternating run by run in one process, after a warm-up of
/// each; the unconstrained run generates as many tokens as the constrained one before it. Reports
/// decode tokens/s (wall time from the first sampled token to the last, so the constraint's work
/// counts) and the constraint's own cost per token (mask + advance), median and p99, also as a
/// fraction of the unconstrained decode step; for a fresh constraint per run and for a reused one.
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
        var grammar = JsonSchemaCompiler.Compile(File.ReadAllText(schemaPath), Path.GetFileName(schemaPath));
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
        var trie = TokenTrie.For(tokenizer, session.VocabSize);

        // Cold: a fresh constraint per run (its recognizer built before the run), so every state is a
        // first visit and every mask a trie walk. Warm: one constraint reused, as a service reuses a schema's.
        var coldCosts = new List<(double Wall, double Cpu)>();
        var setup = new List<double>();
        TimedConstraint Fresh()
        {
            var clock = Stopwatch.StartNew();
            var fresh = new TimedConstraint(new GrammarConstraint(grammar), coldCosts);
            fresh.Inner.MatcherFor(trie);
            setup.Add(clock.Elapsed.TotalMilliseconds);
            return fresh;
        }
        var warm = new TimedConstraint(new GrammarConstraint(grammar), []);
        warm.Inner.MatcherFor(trie);

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
        Once(warm, genTokens);
        warm.Costs.Clear();
        coldCosts.Clear();
        setup.Clear();
        var plain = new List<double>();
        var cold = new List<(double TokensPerSecond, int Tokens)>();
        var warmRates = new List<double>();
        long walksBefore = warm.Inner.TrieWalks;
        for (int run = 0; run < runs; run++)
        {
            cold.Add(Once(Fresh(), genTokens));
            warmRates.Add(Once(warm, genTokens).TokensPerSecond);
            // The schema may end the output early: the unconstrained run then generates as many tokens, over the same positions.
            plain.Add(Once(null, Math.Max(2, cold[^1].Tokens)).TokensPerSecond);
        }
        double plainRate = Benchmark.Median(plain), coldRate = Benchmark.Median(cold.Select(c => c.TokensPerSecond)), warmRate = Benchmark.Median(warmRates);
        var (coldMedian, coldP99) = Percentiles(coldCosts.Select(c => c.Wall));
        var (warmMedian, warmP99) = Percentiles(warm.Costs.Select(c => c.Wall));
        var (coldCpuMedian, coldCpuP99) = Percentiles(coldCosts.Select(c => c.Cpu));
        var (warmCpuMedian, warmCpuP99) = Percentiles(warm.Costs.Select(c => c.Cpu));
        double step = plainRate > 0 ? 1e6 / plainRate : 0;
        return new JsonObject
        {
            ["model"] = Path.GetFullPath(modelFolder),
            ["schema"] = Path.GetFullPath(schemaPath),
            ["vocab_size"] = session.VocabSize,
            ["prompt_tokens"] = promptTokens,
            ["gen_tokens"] = genTokens,
            ["runs"] = runs,
            ["constrained_tokens_per_run"] = Benchmark.Median(cold.Select(c => (double)c.Tokens)),
            ["decode_tokens_per_s_unconstrained"] = Math.Round(plainRate, 1),
            ["decode_tokens_per_s_constrained"] = Math.Round(coldRate, 1),
            ["decode_tokens_per_s_constrained_warm"] = Math.Round(warmRate, 1),
            ["ratio"] = plainRate > 0 ? Math.Round(coldRate / plainRate, 3) : 0,
            ["constraint_us_per_token_median"] = Math.Round(coldMedian, 1),
            ["constraint_us_per_token_p99"] = Math.Round(coldP99, 1),
            ["constraint_us_per_token_median_warm"] = Math.Round(warmMedian, 1),
            ["constraint_us_per_token_p99_warm"] = Math.Round(warmP99, 1),
            ["constraint_cpu_us_per_token_median"] = Math.Round(coldCpuMedian, 1),
            ["constraint_cpu_us_per_token_p99"] = Math.Round(coldCpuP99, 1),
            ["constraint_cpu_us_per_token_median_warm"] = Math.Round(warmCpuMedian, 1),
            ["constraint_cpu_us_per_token_p99_warm"] = Math.Round(warmCpuP99, 1),
            ["constraint_fraction_of_decode_step"] = step > 0 ? Math.Round(coldMedian / step, 4) : 0,
            ["constraint_setup_ms"] = Math.Round(Benchmark.Median(setup), 1),
            ["warm_trie_walks_per_token"] = warm.Costs.Count > 0 ? Math.Round((double)(warm.Inner.TrieWalks - walksBefore) / warm.Costs.Count, 3) : 0,
        };
    }

    private static (double Median, double P99) Percentiles(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        if (sorted.Count == 0) return (0, 0);
        return (sorted[sorted.Count / 2], sorted[Math.Min(sorted.Count - 1, (int)(sorted.Count * 0.99))]);
    }

    public static string Describe(JsonObject r) =>
        $"{r["model"]} (vocabulary {r["vocab_size"]}) under {r["schema"]}, median of {r["runs"]} runs:\n" +
        $"  decode {r["decode_tokens_per_s_unconstrained"]} tok/s unconstrained, {r["decode_tokens_per_s_constrained"]} tok/s constrained (x{r["ratio"]}), " +
        $"{r["decode_tokens_per_s_constrained_warm"]} tok/s with a reused constraint; {r["constrained_tokens_per_run"]} tokens per constrained run\n" +
        $"  constraint per token (fresh constraint each run): median {r["constraint_us_per_token_median"]} us, p99 {r["constraint_us_per_token_p99"]} us " +
        $"({r["constraint_fraction_of_decode_step"]} of an unconstrained decode step); reused: median {r["constraint_us_per_token_median_warm"]} us, p99 {r["constraint_us_per_token_p99_warm"]} us\n" +
        $"  the same in thread CPU time (without preemption): median {r["constraint_cpu_us_per_token_median"]} us, p99 {r["constraint_cpu_us_per_token_p99"]} us; " +
        $"reused: median {r["constraint_cpu_us_per_token_median_warm"]} us, p99 {r["constraint_cpu_us_per_token_p99_warm"]} us\n" +
        $"  setup (recognizer for this vocabulary) {r["constraint_setup_ms"]} ms";

    /// <summary>Wraps a constraint and records the microseconds of each token's mask + advance.</summary>
    /// <summary>Wraps a constraint and records each token's mask + advance: wall microseconds, and
    /// the thread's CPU microseconds (Linux; on a loaded machine wall time includes preemption).</summary>
    private sealed class TimedConstraint(GrammarConstraint inner, List<(double Wall, double Cpu)> costs) : ILogitsConstraint
    {
        public GrammarConstraint Inner { get; } = inner;
        public List<(double Wall, double Cpu)> Costs { get; } = costs;

        public ISequenceConstraint Begin(TextTokenizer tokenizer, int vocabSize, IReadOnlyList<int> eosTokenIds) =>
            new Timed(Inner.Begin(tokenizer, vocabSize, eosTokenIds), Costs);

        private sealed class Timed(ISequenceConstraint inner, List<(double Wall, double Cpu)> costs) : ISequenceConstraint
        {
            private long _maskTicks;
            private double _maskCpu;
            public bool IsComplete => inner.IsComplete;
            public bool MustEnd => inner.MustEnd;
            public int MinTokensToFinish => inner.MinTokensToFinish;

            public void Mask(Span<float> logits, int remainingTokens)
            {
                double cpu = ThreadCpuMicroseconds();
                long start = Stopwatch.GetTimestamp();
                inner.Mask(logits, remainingTokens);
                _maskTicks = Stopwatch.GetTimestamp() - start;
                _maskCpu = ThreadCpuMicroseconds() - cpu;
            }

            public void Advance(int tokenId)
            {
                double cpu = ThreadCpuMicroseconds();
                long start = Stopwatch.GetTimestamp();
                inner.Advance(tokenId);
                long ticks = Stopwatch.GetTimestamp() - start;
                costs.Add(((_maskTicks + ticks) * 1e6 / Stopwatch.Frequency, _maskCpu + ThreadCpuMicroseconds() - cpu));
            }
        }
    }

    private const int ClockThreadCpuTime = 3; // CLOCK_THREAD_CPUTIME_ID

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out TimeSpec time);

    /// <summary>This thread's CPU time in microseconds (0 where the clock is not available).</summary>
    private static double ThreadCpuMicroseconds()
    {
        if (!OperatingSystem.IsLinux() || ClockGetTime(ClockThreadCpuTime, out var time) != 0) return 0;
        return time.Seconds * 1e6 + time.Nanoseconds / 1e3;
    }
}
