using System.Diagnostics;
using System.Text.Json;
using OnnxDecoder.Runtime;

namespace OnnxDecoder.Bench;

/// <summary>
/// Where a continuous-batching step goes, and what concurrent requests see. For each level of
/// --concurrent, that many requests with fresh prompts (never a cached prefix) arrive at once at one
/// batcher, each generating exactly --gen-tokens tokens; levels alternate run by run. Reports the aggregate
/// decode rate (tokens decoded in batched steps over the time in them), ms per batched step, the time to
/// first token (mean and worst) and the prefill runs used. With --profile PREFIX (one level, one run, no
/// warm-up) ONNX Runtime's profile is written, and ms per step is split into ONNX Runtime's model_run
/// (median over the decode runs) and our host's share (the rest of the step: binding, masks, sampling).
/// </summary>
public static class BatchScaling
{
    public static int Run(Arguments a)
    {
        string folder = a.Required("--model");
        var levels = a.String("--concurrent", "1,8").Split(',').Select(int.Parse).ToArray();
        int promptTokens = a.Int("--prompt-tokens", 64), genTokens = a.Int("--gen-tokens", 64), runs = a.Int("--runs", 3), threads = a.Int("--threads", 2);
        int budget = a.Int("--budget", 0);
        string? profile = a.Optional("--profile");
        a.ThrowIfUnread();
        if (profile is not null && (levels.Length != 1 || runs != 1)) throw new ArgumentException("--profile measures one --concurrent level with --runs 1");
        var providers = new ExecutionProviderOptions { IntraOpThreads = threads, ProfileFilePrefix = profile };
        var config = ModelFolder.Open(folder);
        var results = levels.ToDictionary(l => l, _ => new List<(double Decode, double StepMs, double TtftMean, double TtftMax, double PrefillRuns)>());
        double runMedianUs = 0;
        using (var model = new DecoderModel(folder, providers))
        {
            var tokenizer = Runtime.Tokenization.TextTokenizer.Load(model.Folder.Directory, config.BosTokenId);
            using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions
            {
                MaxSequences = levels.Max(), MaxLength = promptTokens + genTokens, MaxQueueLength = 0, StepTokenBudget = budget,
            });
            var options = new GenerationOptions { MaxNewTokens = genTokens, EosTokenIds = [] };
            int round = 0;
            int[] Prompt(int request)
            {
                var ids = new int[promptTokens];
                ids[0] = config.BosTokenId;
                for (int i = 1; i < promptTokens; i++)
                {
                    int id = 3 + (int)((i * 131L + request * 17L + round * 7919L) % (config.VocabSize - 3));
                    while (config.EosTokenIds.Contains(id)) id = (id + 1) % config.VocabSize;
                    ids[i] = id;
                }
                return ids;
            }
            void Once(int level, bool record)
            {
                round++;
                long rowSteps = batcher.RowSteps, steps = batcher.Steps, prefillRuns = batcher.PrefillRuns;
                var decodeTime = batcher.DecodeTime;
                var prompts = Enumerable.Range(0, level).Select(Prompt).ToArray();
                var sequences = prompts.Select(p => batcher.Submit(p, options)).ToList();
                var done = sequences.Select(s => s.Completion.Result).ToList();
                foreach (var sequence in sequences) sequence.Dispose();
                double seconds = (batcher.DecodeTime - decodeTime).TotalSeconds;
                if (record)
                    results[level].Add(((batcher.RowSteps - rowSteps) / seconds, seconds * 1000 / (batcher.Steps - steps),
                        done.Average(r => r.Timings.TimeToFirstTokenMs), done.Max(r => r.Timings.TimeToFirstTokenMs), batcher.PrefillRuns - prefillRuns));
            }
            if (profile is null) foreach (int level in levels) Once(level, record: false);
            for (int r = 0; r < runs; r++)
                foreach (int level in levels) Once(level, record: true);
        }
        if (profile is not null)
        {
            // The profile is written when the session is disposed; runs after the first prefill runs are the decode steps.
            string file = Directory.GetFiles(Path.GetDirectoryName(Path.GetFullPath(profile))!, Path.GetFileName(profile) + "*.json").OrderBy(File.GetLastWriteTimeUtc).Last();
            var modelRuns = StepOverhead.ModelRuns(file);
            int prefills = (int)results[levels[0]][0].PrefillRuns;
            runMedianUs = PeerBenchmark.Median(modelRuns.Skip(prefills).ToList());
            Console.WriteLine($"profile: {file} ({modelRuns.Count} runs, the first {prefills} prefill)");
        }
        Console.WriteLine($"{Path.GetFullPath(folder)}: {promptTokens} prompt + {genTokens} generated tokens per request, {threads} intra-op threads, " +
            $"budget {(budget > 0 ? budget : "none")}, median of {runs} runs, load average {PeerBenchmark.LoadAverage()}");
        double first = PeerBenchmark.Median(results[levels[0]].Select(m => m.Decode).ToList());
        foreach (int level in levels)
        {
            var m = results[level];
            double decode = PeerBenchmark.Median(m.Select(x => x.Decode).ToList()), stepMs = PeerBenchmark.Median(m.Select(x => x.StepMs).ToList());
            string split = profile is null ? "" : $" (model_run {runMedianUs / 1000:F2} ms, host {stepMs - runMedianUs / 1000:F2} ms)";
            Console.WriteLine($"  {level,3} concurrent: aggregate decode {decode,7:F1} tok/s (x{decode / first:F2}), {stepMs:F2} ms/step{split}, " +
                $"TTFT mean {PeerBenchmark.Median(m.Select(x => x.TtftMean).ToList()):F0} ms, max {PeerBenchmark.Median(m.Select(x => x.TtftMax).ToList()):F0} ms, " +
                $"{PeerBenchmark.Median(m.Select(x => x.PrefillRuns).ToList()):F0} prefill runs");
        }
        return 0;
    }
}
