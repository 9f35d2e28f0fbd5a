using System.Diagnostics;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Bench;

/// <summary>
/// Our decode step under ONNX Runtime session option sets (memory pattern, arena, denormals, spinning,
/// optimization level) on one folder, runs rotating over the sets in one process. Two sessions with the
/// default options bound the noise: a set that differs from default by less than they differ is no finding.
/// </summary>
public static class OptionScan
{
    public static int Run(Arguments a)
    {
        string folder = a.Required("--model");
        int threads = a.Int("--threads", 1), runs = a.Int("--runs", 9), prompt = a.Int("--prompt-tokens", 128), gen = a.Int("--gen-tokens", 128);
        string only = a.String("--only", "");
        a.ThrowIfUnread();
        var baseOptions = new ExecutionProviderOptions { IntraOpThreads = threads };
        var variants = new List<(string Name, ExecutionProviderOptions Options)>
        {
            ("default", baseOptions),
            ("default again", baseOptions),
            ("no-mem-pattern", baseOptions with { EnableMemoryPattern = false }),
            ("no-arena", baseOptions with { EnableCpuMemArena = false }),
            ("no-pattern-no-arena", baseOptions with { EnableMemoryPattern = false, EnableCpuMemArena = false }),
            ("denormal-zero", baseOptions with { SessionConfigEntries = new Dictionary<string, string> { ["session.set_denormal_as_zero"] = "1" } }),
            ("no-spin", baseOptions with { SessionConfigEntries = new Dictionary<string, string> { ["session.intra_op.allow_spinning"] = "0" } }),
            ("extended", baseOptions with { OptimizationLevel = Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED }),
        };
        if (only.Length > 0) variants = variants.Where(v => v.Name == "default" || only.Split(',').Contains(v.Name)).ToList();
        var config = ModelFolder.Open(folder);
        var ids = PeerBenchmark.BenchPrompt(config.BosTokenId, config.VocabSize, prompt).Select(i => (long)i).ToArray();
        var sessions = variants.Select(v => new DecoderSession(folder, new DecoderSessionOptions { MaxLength = prompt + gen, Providers = v.Options })).ToList();
        var steps = sessions.Select(_ => new List<double>()).ToList();
        var rates = sessions.Select(_ => new List<double>()).ToList();
        try
        {
            for (int r = -1; r < runs; r++)
                for (int k = 0; k < sessions.Count; k++)
                {
                    int v = (k + Math.Max(r, 0)) % sessions.Count;
                    var s = sessions[v];
                    s.Reset();
                    var logits = s.Append(ids, ids.Length);
                    var next = new long[1];
                    var clock = Stopwatch.StartNew();
                    for (int i = 1; i < gen; i++)
                    {
                        long start = Stopwatch.GetTimestamp();
                        int best = Sampler.ArgMax(logits);
                        next[0] = config.EosTokenIds.Contains(best) ? (best + 1) % config.VocabSize : best;
                        logits = s.Step(next);
                        if (r >= 0) steps[v].Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
                    }
                    if (r >= 0) rates[v].Add((gen - 1) / clock.Elapsed.TotalSeconds);
                }
            Console.WriteLine($"{folder}: {threads} thread(s), {runs} runs interleaved, load {PeerBenchmark.LoadAverage()}");
            double baseline = PeerBenchmark.Median(steps[0]);
            for (int v = 0; v < sessions.Count; v++)
                Console.WriteLine($"  {variants[v].Name,-22} step median {PeerBenchmark.Median(steps[v]),8:F1} us  p10 {P(steps[v], 0.1),8:F1}  tok/s median {PeerBenchmark.Median(rates[v]),8:F0}  step vs default {baseline / PeerBenchmark.Median(steps[v]):F3}");
        }
        finally
        {
            foreach (var s in sessions) s.Dispose();
        }
        return 0;
    }

    private static double P(List<double> values, double q)
    {
        var sorted = values.Order().ToArray();
        return sorted[(int)Math.Round(q * (sorted.Length - 1))];
    }
}
