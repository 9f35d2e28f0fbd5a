using System.Globalization;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime;

namespace OnnxDecoder.Cli;

/// <summary>
/// `bench --concurrent 1,4 --speculative ngram|MODEL_DIR [--draft-tokens K]`: the continuous batcher with and
/// without speculation, alternating run by run in one process over one loaded model, at each level of
/// concurrency, on two greedy workloads: requests whose prompt already contains the text the model goes on to
/// write (a seed, the model's own continuation of it, the seed again) and requests that do not (the seed
/// alone). Each request of a level has its own seed. Reports aggregate decode tok/s (tokens over the time in
/// decode steps, drafting included), end to end tok/s (prefill included), the speed-up, the acceptance rate, and
/// whether every output was identical to the plain batcher's.
/// </summary>
public static class SpeculativeBatchBenchmark
{
    private static readonly string[] Seeds =
    [
        "Once upon a time, there was a little girl named Lily.", "Tom had a big red ball.", "One day, a cat sat in the sun.",
        "The little boy went to the park.", "Sue wanted to bake a cake.", "A small bird lived in a tree.",
        "Max the dog liked to run.", "Anna found a shiny stone.",
    ];

    public static JsonObject Run(string modelFolder, string speculative, int draftTokens, int[] concurrency, int genTokens, int runs, ExecutionProviderOptions providers)
    {
        if (genTokens < 2 || runs < 1 || concurrency.Length == 0 || concurrency.Any(c => c is < 1 or > 64))
            throw new ArgumentException("bench --concurrent --speculative needs --gen-tokens >= 2, --runs >= 1 and --concurrent levels between 1 and 64");
        using var model = new DecoderModel(modelFolder, providers);
        var folder = model.Folder;
        var tokenizer = Runtime.Tokenization.TextTokenizer.Load(folder.Directory, folder.BosTokenId);
        int rows = concurrency.Max();
        var options = new GenerationOptions { MaxNewTokens = genTokens, EosTokenIds = [] };
        int[] Seed(int request)
        {
            var ids = tokenizer.Encode(Seeds[request % Seeds.Length], addBos: true);
            return request < Seeds.Length ? ids : [.. ids, .. tokenizer.Encode($" {request}", addBos: false)];
        }
        var seeds = Enumerable.Range(0, rows).Select(Seed).ToArray();
        int[][] repeating;
        using (var probe = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = rows, MaxLength = seeds.Max(s => s.Length) + genTokens }))
        {
            var continuations = seeds.Select(s => probe.GenerateAsync(s, options)).ToArray();
            repeating = seeds.Select((s, i) => (int[])[.. s, .. continuations[i].Result.TokenIds, .. s.Skip(1)]).ToArray();
        }
        int maxLength = repeating.Max(p => p.Length) + genTokens;
        if (maxLength > folder.ContextLength)
            throw new ArgumentException($"the repeating workload needs {maxLength} positions, over the model's context length {folder.ContextLength}: lower --gen-tokens");
        var plainOptions = new BatcherOptions { MaxSequences = rows, MaxLength = maxLength, MaxQueueLength = 0 };
        using var plain = new ContinuousBatcher(model, tokenizer, plainOptions);
        using var fast = new ContinuousBatcher(model, tokenizer, plainOptions with { Speculative = speculative, DraftTokens = draftTokens, DraftProviders = providers });

        (double Decode, double EndToEnd, int[][] Outputs) Once(ContinuousBatcher batcher, int[][] prompts, int level)
        {
            long tokens = batcher.RowSteps;
            var decodeTime = batcher.DecodeTime;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var sequences = Enumerable.Range(0, level).Select(i => batcher.Submit(prompts[i], options)).ToList();
            Task.WaitAll(sequences.Select(s => s.Completion).ToArray());
            clock.Stop();
            var outputs = sequences.Select(s => s.Completion.Result.TokenIds).ToArray();
            foreach (var sequence in sequences) sequence.Dispose();
            return ((batcher.RowSteps - tokens) / (batcher.DecodeTime - decodeTime).TotalSeconds, level * genTokens / clock.Elapsed.TotalSeconds, outputs);
        }

        var workloads = new JsonObject();
        foreach (var (name, prompts) in new[] { ("repeats_context", repeating), ("new_text", seeds) })
        {
            var levels = new JsonArray();
            foreach (int level in concurrency)
            {
                var plainRuns = new List<(double Decode, double EndToEnd)>();
                var fastRuns = new List<(double Decode, double EndToEnd)>();
                long drafted = fast.DraftedTokens, accepted = fast.AcceptedDraftTokens;
                bool identical = true;
                for (int run = 0; run <= runs; run++) // run 0 warms up
                {
                    var a = Once(plain, prompts, level);
                    var b = Once(fast, prompts, level);
                    for (int i = 0; i < level; i++) identical &= a.Outputs[i].AsSpan().SequenceEqual(b.Outputs[i]);
                    if (run == 0) continue;
                    plainRuns.Add((a.Decode, a.EndToEnd));
                    fastRuns.Add((b.Decode, b.EndToEnd));
                }
                double plainDecode = Benchmark.Median(plainRuns.Select(r => r.Decode)), fastDecode = Benchmark.Median(fastRuns.Select(r => r.Decode));
                double plainEnd = Benchmark.Median(plainRuns.Select(r => r.EndToEnd)), fastEnd = Benchmark.Median(fastRuns.Select(r => r.EndToEnd));
                long d = fast.DraftedTokens - drafted, k = fast.AcceptedDraftTokens - accepted;
                levels.Add(new JsonObject
                {
                    ["concurrent_sequences"] = level,
                    ["plain_aggregate_decode_tokens_per_s"] = Math.Round(plainDecode, 1),
                    ["speculative_aggregate_decode_tokens_per_s"] = Math.Round(fastDecode, 1),
                    ["decode_speed_up"] = Math.Round(fastDecode / plainDecode, 3),
                    ["plain_end_to_end_tokens_per_s"] = Math.Round(plainEnd, 1),
                    ["speculative_end_to_end_tokens_per_s"] = Math.Round(fastEnd, 1),
                    ["end_to_end_speed_up"] = Math.Round(fastEnd / plainEnd, 3),
                    ["drafted_per_run"] = d / (runs + 1),
                    ["accepted_per_run"] = k / (runs + 1),
                    ["acceptance_rate"] = Math.Round(d > 0 ? (double)k / d : 0, 3),
                    ["identical_output"] = identical,
                });
            }
            workloads[name] = levels;
        }
        return new JsonObject
        {
            ["model"] = Path.GetFullPath(modelFolder), ["provider"] = ExecutionProviders.Name(model.Provider), ["speculative"] = speculative,
            ["draft_tokens"] = draftTokens, ["gen_tokens"] = genTokens, ["runs"] = runs, ["workloads"] = workloads,
        };
    }

    public static string Describe(JsonObject r) => string.Join("\n", r["workloads"]!.AsObject().SelectMany(w => w.Value!.AsArray().Select(l =>
        string.Create(CultureInfo.InvariantCulture,
            $"{w.Key}, {l!["concurrent_sequences"]} concurrent: decode plain {l["plain_aggregate_decode_tokens_per_s"]} tok/s, speculative ({r["speculative"]}, k={r["draft_tokens"]}) " +
            $"{l["speculative_aggregate_decode_tokens_per_s"]} tok/s: x{l["decode_speed_up"]}; end to end x{l["end_to_end_speed_up"]}; acceptance {l["acceptance_rate"]}; " +
            $"identical output: {l["identical_output"]}"))));
}
