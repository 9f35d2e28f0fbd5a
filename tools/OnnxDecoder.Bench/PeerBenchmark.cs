using OnnxDecoder.Exporters.Gguf;

namespace OnnxDecoder.Bench;

/// <summary>
/// Ours, onnxruntime-genai (on our export) and llama.cpp (on GGUF files of the same weights) at fp32,
/// int8 / Q8_0 and int4 / Q4_0: rounds alternate over every peer in one process, so machine noise hits
/// all alike; ratios are medians of per-round ratios. Quality: mean KL divergence, teacher-forced, of
/// each quantized form from its own runtime's fp32, and of llama.cpp F32 from ours fp32 (which checks
/// that the GGUF holds the same model).
/// </summary>
public static class PeerBenchmark
{
    private static readonly (string Precision, int? Bits, GgmlType Gguf)[] Precisions =
        [("fp32", null, GgmlType.F32), ("int8", 8, GgmlType.Q8_0), ("int4", 4, GgmlType.Q4_0)];

    public static int Run(Arguments a)
    {
        int promptTokens = a.Int("--prompt-tokens", 128), genTokens = a.Int("--gen-tokens", 128), runs = a.Int("--runs", 5), threads = a.Int("--threads", 2);
        using var work = new Workspace(a.String("--work", "artifacts/bench"), a.Required("--checkpoint"), a.Optional("--tokenizer"), a.Int("--seed", 1));
        var c = work.Config;
        var chosen = a.String("--precisions", "fp32,int8,int4").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var precisions = Precisions.Where(p => chosen.Contains(p.Precision)).ToArray();
        string? klFile = a.Optional("--kl-tokens");
        a.ThrowIfUnread();
        if (precisions.Length == 0) throw new ArgumentException("--precisions: name at least one of fp32, int8, int4");
        int maxLength = promptTokens + genTokens;
        if (maxLength > c.MaxPositions) throw new ArgumentException($"{promptTokens} + {genTokens} tokens exceed the model's context of {c.MaxPositions}");

        // Files first (exports and GGUF writing are not timed).
        var folders = precisions.ToDictionary(p => p.Precision, p => work.Export(p.Precision, p.Bits is int bits ? Workspace.DefaultQuantization(bits) : null));
        var ggufs = precisions.ToDictionary(p => p.Precision, p => work.Gguf(p.Gguf));

        var prompt = BenchPrompt(c.BosTokenId, c.VocabSize, promptTokens);
        var peers = new List<(string Precision, IPeer Peer)>();
        try
        {
            foreach (var p in precisions)
            {
                peers.Add((p.Precision, new OursPeer($"ours {p.Precision}", folders[p.Precision], maxLength, threads)));
                peers.Add((p.Precision, new GenAiPeer($"genai {p.Precision}", folders[p.Precision], c.MaxPositions, threads)));
                peers.Add((p.Precision, new LlamaCppPeer($"llama.cpp {p.Gguf}", ggufs[p.Precision], maxLength, Math.Max(promptTokens, 512), threads, c.EosTokenIds)));
            }
            foreach (var (_, peer) in peers) peer.Run(prompt, Math.Min(genTokens, 8)); // warm-up: first-run allocations and page faults
            var times = peers.ToDictionary(p => p.Peer, _ => new List<RunTimes>());
            for (int r = 0; r < runs; r++)
            {
                // Rotate the order each round so that no peer always runs right after the same one.
                for (int i = 0; i < peers.Count; i++)
                {
                    var peer = peers[(i + r) % peers.Count].Peer;
                    var t = peer.Run(prompt, genTokens);
                    times[peer].Add(t);
                    Console.Error.WriteLine($"  round {r + 1} {peer.Name}: prefill {t.PrefillRate:F1} tok/s, decode {t.DecodeRate:F1} tok/s");
                }
                Console.Error.WriteLine($"round {r + 1}/{runs} done");
            }

            Console.WriteLine($"## {work.Name}: {promptTokens} prompt + {genTokens} generated tokens, batch 1, greedy, {threads} threads each, " +
                $"{runs} rounds alternating ({Environment.ProcessorCount} cores, load average {LoadAverage()})");
            // Ours runs with the runtime's defaults: our MatMulNBits kernels where the build shipped them.
            foreach (var (precision, peer) in peers.Where(p => p.Peer is OursPeer && p.Precision != "fp32"))
                Console.WriteLine($"ours {precision} MatMulNBits: {((OursPeer)peer).NativeKernels}");
            Console.WriteLine();
            Console.WriteLine("| precision | runtime | prefill tok/s | decode tok/s | ours/this prefill | ours/this decode |");
            Console.WriteLine("| --- | --- | ---: | ---: | ---: | ---: |");
            foreach (var p in precisions)
            {
                var group = peers.Where(x => x.Precision == p.Precision).Select(x => x.Peer).ToList();
                var ours = times[group[0]];
                foreach (var peer in group)
                {
                    var t = times[peer];
                    string ratios = peer == group[0] ? "| | |"
                        : $"| {Median(Enumerable.Range(0, runs).Select(r => ours[r].PrefillRate / t[r].PrefillRate)):F2}x | {Median(Enumerable.Range(0, runs).Select(r => ours[r].DecodeRate / t[r].DecodeRate)):F2}x |";
                    Console.WriteLine($"| {p.Precision} | {peer.Name} | {Median(t.Select(x => x.PrefillRate)):F1} | {Median(t.Select(x => x.DecodeRate)):F1} {ratios}");
                }
            }

            // Quality: teacher-forced over a fixed token sequence.
            var klTokens = klFile is not null ? Workspace.TokensFromJson(klFile) : ((OursPeer)peers[0].Peer).Greedy(prompt, genTokens);
            klTokens = klTokens.Take(maxLength).ToArray();
            var logits = peers.Where(p => p.Peer is not GenAiPeer).ToDictionary(p => p.Peer.Name, p => p.Peer.TeacherForcedLogits(klTokens)!);
            Console.WriteLine();
            Console.WriteLine($"Mean KL divergence, teacher-forced over {klTokens.Length - 1} positions ({(klFile is not null ? Path.GetFileName(klFile) : "ours fp32 greedy text from the benchmark prompt")}):");
            Console.WriteLine();
            Console.WriteLine("| pair | mean KL |");
            Console.WriteLine("| --- | ---: |");
            if (logits.ContainsKey("ours fp32") && logits.ContainsKey("llama.cpp F32"))
                Console.WriteLine($"| llama.cpp F32 from ours fp32 (same model?) | {Divergence.MeanKl(logits["ours fp32"], logits["llama.cpp F32"]):G3} |");
            foreach (var p in precisions.Where(p => p.Bits is not null))
            {
                if (logits.ContainsKey("ours fp32"))
                    Console.WriteLine($"| ours {p.Precision} from ours fp32 | {Divergence.MeanKl(logits["ours fp32"], logits[$"ours {p.Precision}"]):G3} |");
                if (logits.ContainsKey("llama.cpp F32"))
                    Console.WriteLine($"| llama.cpp {p.Gguf} from llama.cpp F32 | {Divergence.MeanKl(logits["llama.cpp F32"], logits[$"llama.cpp {p.Gguf}"]):G3} |");
            }
            return 0;
        }
        finally
        {
            foreach (var (_, peer) in peers) peer.Dispose();
        }
    }

    /// <summary>BOS, then ids spread over the vocabulary (deterministic, skipping the special ids 0..2).</summary>
    public static int[] BenchPrompt(int bos, int vocab, int length)
    {
        var prompt = new int[length];
        prompt[0] = bos;
        for (int i = 1; i < length; i++) prompt[i] = 3 + (int)((i * 131L) % (vocab - 3));
        return prompt;
    }

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0) return double.NaN;
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    public static string LoadAverage()
    {
        try { return string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "unknown"; }
    }
}
