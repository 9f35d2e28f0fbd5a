using System.Diagnostics;
using System.Text.Json;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Bench;

/// <summary>
/// Our host's time per decode step beyond ONNX Runtime's own run. Method: ONNX Runtime's profiler
/// records a "model_run" event (its time inside Run, from entry to the outputs being ready) for every
/// run; a stopwatch records every DecoderSession.Step around it (binding, mask and position updates,
/// the logits view). Overhead = median(step wall time) - median(model_run) over the same steps; the
/// greedy pick (arg-max over the logits, outside Step) is timed on its own.
/// </summary>
public static class StepOverhead
{
    public static int Run(Arguments a)
    {
        string folder = a.Required("--model");
        int steps = a.Int("--steps", 256), threads = a.Int("--threads", 1), rounds = a.Int("--runs", 3);
        a.ThrowIfUnread();
        string profileDir = Path.Combine(Path.GetTempPath(), $"onnxdecoder-overhead-{Environment.ProcessId}");
        Directory.CreateDirectory(profileDir);
        try
        {
            var stepUs = new List<double>();
            var pickUs = new List<double>();
            string prefix = Path.Combine(profileDir, "run");
            int prefillRuns;
            using (var session = new DecoderSession(folder, new DecoderSessionOptions
            {
                MaxLength = Math.Min(steps + 2, ModelFolder.Open(folder).ContextLength),
                Providers = new ExecutionProviderOptions { IntraOpThreads = threads, ProfileFilePrefix = prefix },
            }))
            {
                steps = Math.Min(steps, session.MaxLength - 2);
                prefillRuns = 0;
                for (int r = 0; r < rounds; r++)
                {
                    session.Reset();
                    var logits = session.Append([session.Folder.BosTokenId], 1);
                    prefillRuns++;
                    var next = new long[1];
                    for (int i = 0; i < steps; i++)
                    {
                        long start = Stopwatch.GetTimestamp();
                        int best = Sampler.ArgMax(logits);
                        pickUs.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
                        next[0] = session.Folder.EosTokenIds.Contains(best) ? (best + 1) % session.VocabSize : best;
                        start = Stopwatch.GetTimestamp();
                        logits = session.Step(next);
                        stepUs.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
                    }
                }
            }
            // The profile is written when the session is disposed.
            string profile = Directory.GetFiles(profileDir, "run*.json").Single();
            var runUs = ModelRuns(profile);
            if (runUs.Count != rounds * (steps + 1))
                throw new InvalidDataException($"{profile}: {runUs.Count} model_run events, expected {rounds * (steps + 1)} (one per prefill and step)");
            // Drop each round's prefill run: the rest pair one to one with the timed steps.
            var stepRuns = Enumerable.Range(0, rounds).SelectMany(r => runUs.Skip(r * (steps + 1) + 1).Take(steps)).ToList();
            double step = PeerBenchmark.Median(stepUs), run = PeerBenchmark.Median(stepRuns), pick = PeerBenchmark.Median(pickUs);
            var perStep = stepUs.Zip(stepRuns, (s, m) => s - m).ToList();
            Console.WriteLine($"{Path.GetFullPath(folder)}: {rounds} x {steps} decode steps, {threads} intra-op thread(s), load average {PeerBenchmark.LoadAverage()}");
            Console.WriteLine($"  DecoderSession.Step wall     median {step,9:F1} us");
            Console.WriteLine($"  ONNX Runtime model_run       median {run,9:F1} us");
            Console.WriteLine($"  host overhead in Step        median {PeerBenchmark.Median(perStep),9:F1} us (per-step difference; p90 {Percentile(perStep, 0.9):F1} us)");
            Console.WriteLine($"  greedy pick (arg-max)        median {pick,9:F1} us");
            return 0;
        }
        finally
        {
            Directory.Delete(profileDir, recursive: true);
        }
    }

    /// <summary>Durations (us) of the "model_run" events of an ONNX Runtime profile, in order.</summary>
    private static List<double> ModelRuns(string path)
    {
        using var stream = File.OpenRead(path);
        using var document = JsonDocument.Parse(stream);
        return document.RootElement.EnumerateArray()
            .Where(e => e.TryGetProperty("name", out var name) && name.GetString() == "model_run")
            .OrderBy(e => e.GetProperty("ts").GetDouble())
            .Select(e => e.GetProperty("dur").GetDouble())
            .ToList();
    }

    private static double Percentile(List<double> values, double q)
    {
        var sorted = values.Order().ToArray();
        return sorted[(int)Math.Min(sorted.Length - 1, Math.Round(q * (sorted.Length - 1)))];
    }
}
