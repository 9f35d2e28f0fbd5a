using System.Globalization;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Speculation;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Cli;

/// <summary>
/// `bench --speculative ngram|MODEL_DIR [--draft-tokens K]`: greedy decoding with and without speculation,
/// alternating run by run in one process, on two workloads: one whose prompt already contains the text
/// the model goes on to write (the seed, the model's own greedy continuation of it, then the seed again)
/// and one that does not (the seed alone). Reports decode speed, the speed-up, the acceptance rate, and
/// whether the outputs were identical (greedy speculation must not change a token).
/// </summary>
public static class SpeculativeBenchmark
{
    /// <summary>Parses `--speculative`: "ngram" (prompt lookup) or a draft model folder; null when not given.</summary>
    public static SpeculationOptions? Options(string? speculative, int draftTokens, ExecutionProviderOptions providers, out IDisposable? owned)
    {
        owned = null;
        if (speculative is null) return null;
        if (draftTokens < 1) throw new ArgumentException($"--draft-tokens {draftTokens}: draft at least 1 token per round");
        if (speculative == "ngram") return new SpeculationOptions { Drafter = new PromptLookupDrafter(), DraftTokens = draftTokens };
        if (!Directory.Exists(speculative))
            throw new ArgumentException($"--speculative '{speculative}' is neither 'ngram' nor a model folder: give ngram, or the folder of a smaller export with the same tokenizer");
        var draft = new DraftModelDrafter(speculative, new DecoderSessionOptions { Providers = providers });
        owned = draft;
        return new SpeculationOptions { Drafter = draft, DraftTokens = draftTokens };
    }

    public static JsonObject Run(string modelFolder, string speculative, int draftTokens, int genTokens, int runs, ExecutionProviderOptions providers)
    {
        if (genTokens < 2 || runs < 1) throw new ArgumentException("bench --speculative needs --gen-tokens >= 2 and --runs >= 1");
        using var session = new DecoderSession(modelFolder, new DecoderSessionOptions { Providers = providers });
        var tokenizer = TextTokenizer.LoadIfPresent(session.Folder.Directory, session.Folder.BosTokenId);
        var generator = new Generator(session, tokenizer);
        var speculation = Options(speculative, draftTokens, providers, out var owned)!;
        using var _ = owned;
        int[] seed = tokenizer?.Encode("Once upon a time, there was a little girl named Lily.", addBos: true)
            ?? [session.Folder.BosTokenId, .. Enumerable.Range(0, 12).Select(i => 3 + i * 37 % (session.VocabSize - 3))];
        var plainOptions = new GenerationOptions { MaxNewTokens = genTokens, EosTokenIds = [] };
        var continuation = generator.Generate(seed, plainOptions).TokenIds;
        int[] repeating = [.. seed, .. continuation, .. seed.Skip(1)];
        if (repeating.Length + genTokens > session.MaxLength)
            throw new ArgumentException($"the repeating workload needs {repeating.Length + genTokens} positions, over the max length {session.MaxLength}: lower --gen-tokens");
        var workloads = new JsonObject();
        foreach (var (name, prompt) in new[] { ("repeats_context", repeating), ("new_text", seed) })
        {
            var plainRates = new List<double>();
            var fastRates = new List<double>();
            int drafted = 0, accepted = 0;
            bool identical = true;
            for (int r = 0; r <= runs; r++) // run 0 warms up
            {
                var plain = generator.Generate(prompt, plainOptions);
                var fast = generator.Generate(prompt, plainOptions with { Speculation = speculation });
                identical &= plain.TokenIds.SequenceEqual(fast.TokenIds);
                if (r == 0) continue;
                plainRates.Add(plain.Timings.DecodeTokensPerSecond);
                fastRates.Add(fast.Timings.DecodeTokensPerSecond);
                drafted += fast.Speculation!.Drafted;
                accepted += fast.Speculation.Accepted;
            }
            double plainMedian = Benchmark.Median(plainRates), fastMedian = Benchmark.Median(fastRates);
            workloads[name] = new JsonObject
            {
                ["prompt_tokens"] = prompt.Length,
                ["plain_decode_tokens_per_s"] = Math.Round(plainMedian, 1),
                ["speculative_decode_tokens_per_s"] = Math.Round(fastMedian, 1),
                ["speed_up"] = Math.Round(fastMedian / plainMedian, 3),
                ["drafted"] = drafted / runs,
                ["accepted"] = accepted / runs,
                ["acceptance_rate"] = Math.Round(drafted > 0 ? (double)accepted / drafted : 0, 3),
                ["identical_output"] = identical,
            };
        }
        return new JsonObject
        {
            ["model"] = modelFolder, ["speculative"] = speculative, ["draft_tokens"] = draftTokens, ["gen_tokens"] = genTokens, ["runs"] = runs,
            ["workloads"] = workloads,
        };
    }

    public static string Describe(JsonObject r) => string.Join("\n", r["workloads"]!.AsObject().Select(w =>
        string.Create(CultureInfo.InvariantCulture, $"{w.Key}: plain {w.Value!["plain_decode_tokens_per_s"]} tok/s, speculative ({r["speculative"]}, k={r["draft_tokens"]}) " +
            $"{w.Value["speculative_decode_tokens_per_s"]} tok/s: x{w.Value["speed_up"]}, acceptance {w.Value["acceptance_rate"]}, identical output: {w.Value["identical_output"]}")));
}
