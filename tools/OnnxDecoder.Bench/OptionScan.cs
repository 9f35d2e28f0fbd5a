using System.Diagnostics;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Bench;

/// <summary>
/// Our decode step under ONNX Runtime session option sets (memory pattern, arena, denormals, spinning,
/// optimization level) on one folder, the sessions stepping in lockstep in one process. The first round
/// meets every position for the first time (as one long generation does); later rounds repeat them (as a
/// benchmark's repeated runs do, which per-shape caches favour). A second session with the default options
/// bounds the noise: a set that differs from default by less than it does is no finding.
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
        // Lockstep: every session takes one step at the same position in turn, so that a burst of machine load
        // hits all alike; per variant, the median of its per-position ratio to the default session's step.
        var warm = sessions.Select(_ => new List<double>()).ToList();
        var cold = sessions.Select(_ => new List<double>()).ToList(); // the first round: positions no session has seen
        var warmRatio = sessions.Select(_ => new List<double>()).ToList();
        var coldRatio = sessions.Select(_ => new List<double>()).ToList();
        var logits = new float[sessions.Count][];
        try
        {
            var next = new long[1];
            var us = new double[sessions.Count];
            for (int r = 0; r <= runs; r++)
            {
                for (int v = 0; v < sessions.Count; v++)
                {
                    sessions[v].Reset();
                    logits[v] = sessions[v].Append(ids, ids.Length).ToArray();
                }
                for (int i = 1; i < gen; i++)
                {
                    for (int k = 0; k < sessions.Count; k++)
                    {
                        int v = (k + i) % sessions.Count; // rotate who goes first
                        long start = Stopwatch.GetTimestamp();
                        int best = Sampler.ArgMax(logits[v]);
                        next[0] = config.EosTokenIds.Contains(best) ? (best + 1) % config.VocabSize : best;
                        var result = sessions[v].Step(next);
                        us[v] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
                        result.CopyTo(logits[v]);
                    }
                    for (int v = 0; v < sessions.Count; v++)
                    {
                        (r == 0 ? cold : warm)[v].Add(us[v]);
                        (r == 0 ? coldRatio : warmRatio)[v].Add(us[0] / us[v]);
                    }
                }
            }
            Console.WriteLine($"{folder}: {threads} thread(s), {prompt} prompt + {gen} tokens, sessions in lockstep, first round (new positions) + {runs} rounds, " +
                $"load average {PeerBenchmark.LoadAverage()}");
            Console.WriteLine("  options                 first round: step us  default/this  | later rounds: step us  default/this");
            for (int v = 0; v < sessions.Count; v++)
                Console.WriteLine($"  {variants[v].Name,-22} {PeerBenchmark.Median(cold[v]),12:F1} {PeerBenchmark.Median(coldRatio[v]),12:F3}   | " +
                    $"{PeerBenchmark.Median(warm[v]),12:F1} {PeerBenchmark.Median(warmRatio[v]),12:F3}");
        }
        finally
        {
            foreach (var s in sessions) s.Dispose();
        }
        return 0;
    }

}
