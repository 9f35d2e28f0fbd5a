using System.Diagnostics;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Quantization;

namespace OnnxDecoder.Bench;

/// <summary>
/// int4 / int8 forms ONNX Runtime's CPU provider can run, side by side on one checkpoint: MatMulNBits
/// block size, accuracy level (0 unset, 1 fp32, 4 int8 activations), zero points, fp16 scales (which
/// need fp16 activations), a float embedding, DequantizeLinear feeding MatMul (the portable lowering,
/// which ONNX Runtime fuses back), and session options (intra-op spinning off, prepacking off). Each
/// is timed in rounds that alternate over all candidates, and graded by its mean KL divergence from
/// the fp32 export, teacher-forced over the fp32 export's greedy text, or with --kl-tokens ids.json over a file's
/// tokens (prompt_ids then generated_ids, e.g. llama2.c's greedy story for stories260K).
/// Every candidate runs ONNX Runtime's own kernels except the "-native" ones: the same export as their base id with our
/// MatMulNBits kernel (libonnxdecoder_kernels.so, ExecutionProviderOptions.NativeMatMul), compared side by side.
/// </summary>
public static class KernelBenchmark
{
    private sealed record Candidate(string Id, string Form, QuantizationOptions? Quantization, bool Float16 = false, Lowering Lowering = Lowering.Ort,
        Dictionary<string, string>? Session = null, string? ExportId = null, bool Native = false)
    {
        public string Folder(Workspace work) => work.Export(ExportId ?? Id, Quantization, Float16, Lowering);
    }

    private static QuantizationOptions Q(int bits, int block = 32, int accuracy = 4, bool zeroPoints = false, bool? embedding = null, bool search = true,
        bool dynamic = false) =>
        new() { Bits = bits, BlockSize = block, AccuracyLevel = accuracy, Symmetric = !zeroPoints, QuantizeEmbedding = embedding, SearchScales = search,
            DynamicQuantizeMatMul = dynamic };

    private static readonly Dictionary<string, string> NoSpinning = new() { ["session.intra_op.allow_spinning"] = "0" };
    private static readonly Dictionary<string, string> NoPrepacking = new() { ["session.disable_prepacking"] = "1" };

    // Ids without "-rtn" use the least-error scale search; "-rtn" is round-to-nearest from the block's range (ggml's rule).
    private static readonly Candidate[] Candidates =
    [
        new("fp32", "fp32 MatMul (reference)", null),
        new("int4-b32-a4", "MatMulNBits 4-bit, block 32, accuracy 4, fp32 scales, no zero points, int4 embedding", Q(4)),
        new("int4-b32-a4-rtn", "int4 block 32, round-to-nearest scales", Q(4, search: false)),
        new("int4-b64-a4", "MatMulNBits 4-bit, block 64, accuracy 4", Q(4, block: 64)),
        new("int4-b64-a4-rtn", "int4 block 64, round-to-nearest scales", Q(4, block: 64, search: false)),
        new("int4-b128-a4", "MatMulNBits 4-bit, block 128, accuracy 4", Q(4, block: 128)),
        new("int4-b128-a4-rtn", "int4 block 128, round-to-nearest scales", Q(4, block: 128, search: false)),
        new("int4-b64-a4-zp", "MatMulNBits 4-bit, block 64, accuracy 4, zero points", Q(4, block: 64, zeroPoints: true)),
        new("int4-b128-a4-zp", "MatMulNBits 4-bit, block 128, accuracy 4, zero points", Q(4, block: 128, zeroPoints: true)),
        new("int4-b32-a4-zp", "MatMulNBits 4-bit, block 32, accuracy 4, zero points", Q(4, zeroPoints: true)),
        new("int4-b32-a0", "MatMulNBits 4-bit, block 32, accuracy 0", Q(4, accuracy: 0)),
        new("int4-b32-a1", "MatMulNBits 4-bit, block 32, accuracy 1", Q(4, accuracy: 1)),
        new("int4-b32-a4-fe", "MatMulNBits 4-bit, block 32, accuracy 4, float embedding", Q(4, embedding: false)),
        new("int4-b32-a4-fp16", "MatMulNBits 4-bit, block 32, accuracy 4, fp16 scales and activations", Q(4), Float16: true),
        new("int4-b32-dql", "DequantizeLinear(int4, block 32) -> MatMul (portable lowering)", Q(4, accuracy: 0), Lowering: Lowering.Portable),
        new("int4-b32-a4-nospin", "int4 block 32, intra-op spinning off", Q(4), Session: NoSpinning, ExportId: "int4-b32-a4"),
        new("int4-b32-a4-noprepack", "int4 block 32, prepacking off", Q(4), Session: NoPrepacking, ExportId: "int4-b32-a4"),
        new("int4-b32-a4-native", "int4 block 32, accuracy 4 on our kernels (libonnxdecoder_kernels.so)", Q(4), ExportId: "int4-b32-a4", Native: true),
        new("int8-b32-a4", "MatMulNBits 8-bit, block 32, accuracy 4, float embedding", Q(8)),
        new("int8-b32-a4-native", "int8 block 32, accuracy 4 on our kernels (libonnxdecoder_kernels.so)", Q(8), ExportId: "int8-b32-a4", Native: true),
        new("int8-b32-a4-rtn", "int8 block 32, round-to-nearest scales", Q(8, search: false)),
        new("int8-b64-a4", "MatMulNBits 8-bit, block 64, accuracy 4", Q(8, block: 64)),
        new("int8-b128-a4", "MatMulNBits 8-bit, block 128, accuracy 4", Q(8, block: 128)),
        new("int8-b128-a4-rtn", "int8 block 128, round-to-nearest scales", Q(8, block: 128, search: false)),
        new("int8-b32-a4-zp", "MatMulNBits 8-bit, block 32, accuracy 4, zero points", Q(8, zeroPoints: true)),
        new("int8-b128-a4-zp", "MatMulNBits 8-bit, block 128, accuracy 4, zero points", Q(8, block: 128, zeroPoints: true)),
        new("int8-dqmm", "DynamicQuantizeMatMul: int8 weights per output column, uint8 activations per call", Q(8, dynamic: true)),
        new("int8-b32-a0", "MatMulNBits 8-bit, block 32, accuracy 0", Q(8, accuracy: 0)),
        new("int8-b32-a4-qe", "MatMulNBits 8-bit, block 32, accuracy 4, int8 embedding", Q(8, embedding: true)),
        new("int8-dql", "DequantizeLinear(int8, per row) -> MatMul (portable lowering)", Q(8, accuracy: 0), Lowering: Lowering.Portable),
        new("int8-b32-a4-nospin", "int8 block 32, intra-op spinning off", Q(8), Session: NoSpinning, ExportId: "int8-b32-a4"),
    ];

    public static int Run(Arguments a)
    {
        int promptTokens = a.Int("--prompt-tokens", 128), genTokens = a.Int("--gen-tokens", 128), runs = a.Int("--runs", 3), threads = a.Int("--threads", 2);
        using var work = new Workspace(a.String("--work", "artifacts/bench"), a.Required("--checkpoint"), a.Optional("--tokenizer"), a.Int("--seed", 1));
        var only = a.Optional("--only")?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        string? klFile = a.Optional("--kl-tokens");
        a.ThrowIfUnread();
        var unknown = only?.FirstOrDefault(id => Candidates.All(c => c.Id != id));
        if (unknown is not null) throw new ArgumentException($"--only: no candidate '{unknown}' (candidates: {string.Join(", ", Candidates.Select(c => c.Id))})");
        var chosen = Candidates.Where(c => c.Id == "fp32" || only is null || only.Contains(c.Id)).ToList();
        // Teacher-forcing text: the file's tokens (e.g. llama2.c's greedy story, up to the model's context), else fp32's greedy text.
        var klText = klFile is null ? null : Workspace.TokensFromJson(klFile).Take(work.Config.MaxPositions).ToArray();
        int maxLength = Math.Max(promptTokens + genTokens, klText?.Length ?? 0);
        var folders = chosen.ToDictionary(c => c.Id, c => c.Folder(work));
        var prompt = PeerBenchmark.BenchPrompt(work.Config.BosTokenId, work.Config.VocabSize, promptTokens);

        // Quality first (one session at a time): KL from fp32 over fp32's own greedy text.
        int[] text;
        float[][] reference;
        using (var fp32 = new OursPeer("fp32", folders["fp32"], maxLength, threads))
        {
            text = klText ?? fp32.Greedy(prompt, genTokens);
            reference = fp32.TeacherForcedLogits(text);
        }
        var kl = new Dictionary<string, double>();
        foreach (var c in chosen)
        {
            using var peer = new OursPeer(c.Id, folders[c.Id], maxLength, threads, c.Session, c.Native);
            if (c.Native && peer.NativeKernels.Nodes == 0) throw new InvalidOperationException($"{c.Id}: our kernels did not run ({peer.NativeKernels})");
            if (c.Native) Console.Error.WriteLine($"  {c.Id}: {peer.NativeKernels}");
            kl[c.Id] = Divergence.MeanKl(reference, peer.TeacherForcedLogits(text));
            Console.Error.WriteLine($"  {c.Id}: mean KL from fp32 {kl[c.Id]:G3}");
        }

        // Speed: rounds alternate over the candidates (sessions reopened each round, so only one is in memory).
        var times = chosen.ToDictionary(c => c.Id, _ => new List<RunTimes>());
        for (int r = 0; r < runs; r++)
        {
            for (int i = 0; i < chosen.Count; i++)
            {
                var c = chosen[(i + r) % chosen.Count];
                using var peer = new OursPeer(c.Id, folders[c.Id], maxLength, threads, c.Session, c.Native);
                peer.Run(prompt, 8); // warm-up
                var t = peer.Run(prompt, genTokens);
                times[c.Id].Add(t);
                Console.Error.WriteLine($"  round {r + 1} {c.Id}: prefill {t.PrefillRate:F1} tok/s, decode {t.DecodeRate:F1} tok/s");
            }
            Console.Error.WriteLine($"round {r + 1}/{runs} done");
        }

        Console.WriteLine($"## {work.Name}: int4/int8 candidates, {promptTokens} prompt + {genTokens} generated tokens, batch 1, {threads} threads, " +
            $"{runs} rounds alternating ({Environment.ProcessorCount} cores, load average {PeerBenchmark.LoadAverage()})");
        Console.WriteLine($"KL teacher-forced over {text.Length - 1} positions of {(klFile is not null ? Path.GetFileName(klFile) : "fp32's greedy text from the benchmark prompt")}.");
        Console.WriteLine();
        Console.WriteLine("| candidate | form | weights MB | prefill tok/s | decode tok/s | decode / b32-a4 on ORT | mean KL from fp32 |");
        Console.WriteLine("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        foreach (var c in chosen)
        {
            var t = times[c.Id];
            string baseline = c.Id.StartsWith("int8", StringComparison.Ordinal) ? "int8-b32-a4" : "int4-b32-a4";
            string relative = times.TryGetValue(baseline, out var b) && c.Id != "fp32"
                ? $"{PeerBenchmark.Median(Enumerable.Range(0, runs).Select(r => t[r].DecodeRate / b[r].DecodeRate)):F2}x" : "";
            double megabytes = Directory.GetFiles(folders[c.Id]).Where(f => f.EndsWith(".onnx", StringComparison.Ordinal) || f.EndsWith(".data", StringComparison.Ordinal))
                .Sum(f => new FileInfo(f).Length) / 1e6;
            Console.WriteLine($"| {c.Id} | {c.Form} | {megabytes:F1} | {PeerBenchmark.Median(t.Select(x => x.PrefillRate)):F1} | " +
                $"{PeerBenchmark.Median(t.Select(x => x.DecodeRate)):F1} | {relative} | {kl[c.Id]:G3} |");
        }
        return 0;
    }
}
