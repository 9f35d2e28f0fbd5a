using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Modeling;
using OnnxDecoder.Onnx;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Tokenization;
using Spectre.Console;

namespace OnnxDecoder.Cli;

/// <summary>The verbs of DESIGN.md. Every failure is one line on stderr naming the problem, and exit code 1.</summary>
public static class Commands
{
    public static IEnumerable<Command> All() =>
        [Export(), ExportCard(), Generate(), Chat(), Bench(), Serve.Create(), Route.Create(), Compare.Create(), Soak(), Synth(), Inspect(), Demo(),
         TemplateCommand.Create(), TokenizeCommand.Create()];

    public static Lowering ParseLowering(string text) => text.ToLowerInvariant() switch
    {
        "portable" => Lowering.Portable,
        "ort" => Lowering.Ort,
        _ => throw new ArgumentException($"--lowering '{text}' is not known: use portable or ort"),
    };

    public static EmbeddingPooling ParsePooling(string text) => text.ToLowerInvariant() switch
    {
        "last" => EmbeddingPooling.Last,
        "mean" => EmbeddingPooling.Mean,
        "cls" => EmbeddingPooling.Cls,
        _ => throw new ArgumentException($"--pooling '{text}' is not known: use last, mean or cls"),
    };

    private static ExecutionTarget ParseTarget(string text) => text.ToLowerInvariant() switch
    {
        "cpu" => ExecutionTarget.Cpu,
        "cuda" => ExecutionTarget.Cuda,
        "dml" or "directml" => ExecutionTarget.DirectML,
        _ => throw new ArgumentException($"--target '{text}' is not known: use cpu, cuda or dml"),
    };

    /// <summary>Runs a verb; any exception becomes one line on stderr and exit code 1.</summary>
    internal static int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("onnx-decoder: cancelled");
            return 130;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"onnx-decoder: {e.Message.ReplaceLineEndings(" ")}");
            return 1;
        }
    }

    // ---- export ------------------------------------------------------------------------------

    private static Command Export()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "llama2.c .bin, or a Hugging Face folder (config.json + safetensors)", Required = true };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "llama2.c tokenizer.bin (default: tok{vocab}.bin or tokenizer.bin beside the checkpoint)" };
        var output = new Option<string>("--out") { Description = "model folder to write", Required = true };
        var lowering = new Option<string>("--lowering") { Description = "portable (standard ops, every EP) or ort (fused com.microsoft ops)", DefaultValueFactory = _ => "ort" };
        var precision = new Option<string>("--precision") { Description = "fp32; fp16 (weights, activations, KV cache and logits; for CUDA and DirectML); int8 or int4 weights", DefaultValueFactory = _ => "fp32" };
        var blockSize = new Option<int>("--block-size") { Description = "int8/int4: weights per scale along the input dimension (32, 64, 128); a weight whose input width the block does not divide takes the largest of 64, 32 that does, or stays float", DefaultValueFactory = _ => Modeling.Quantization.QuantizationOptions.DefaultBlockSize };
        var nearestScales = new Option<bool>("--nearest-scales") { Description = "int8/int4: each block's scale by round-to-nearest from its range (ggml's Q4_0 / Q8_0 rule) instead of the default least-error search" };
        var asymmetric = new Option<bool>("--asymmetric") { Description = "int8/int4: a zero point per block (default: symmetric)" };
        var activations = new Option<string>("--activations") { Description = "int8/int4: fp32 or fp16 activations, KV cache and logits (fp16 for CUDA and DirectML; --precision fp16 implies fp16)", DefaultValueFactory = _ => "fp32" };
        var embedding = new Option<string>("--embedding") { Description = "int8/int4 with the ort lowering: quantized (GatherBlockQuantized; a tied LM head shares the copy) or float token table (default: quantized for int4, float for int8)", DefaultValueFactory = _ => "auto" };
        var accuracy = new Option<int>("--accuracy-level") { Description = "int8/int4 with the ort lowering: MatMulNBits accuracy_level; 4 (default) quantizes activations to int8, the fast CPU kernels; 0 computes in fp32", DefaultValueFactory = _ => 4 };
        var maxLength = new Option<int?>("--max-length") { Description = "longest sequence the export serves (default: the model's context)" };
        var target = new Option<string>("--target") { Description = "execution provider the export is for: cpu, cuda, dml", DefaultValueFactory = _ => "cpu" };
        var allowNonFinite = new Option<bool>("--allow-non-finite") { Description = "export weights holding NaN or infinity instead of refusing them" };
        var hiddenStates = new Option<bool>("--hidden-states") { Description = "add the final-normed hidden states as the output hidden_states, so the model serves embeddings" };
        var pooling = new Option<string>("--pooling") { Description = "with --hidden-states: how an embedding is pooled: last (last real token), mean (over real tokens) or cls (first token); L2-normalised. Default: a sentence-transformers checkpoint's 1_Pooling/config.json, else last", DefaultValueFactory = _ => "last" };
        var command = new Command("export", "Export a checkpoint to a model folder (model.onnx, genai_config.json, tokenizer)")
            { checkpoint, tokenizer, output, lowering, precision, maxLength, target, allowNonFinite, blockSize, asymmetric, nearestScales, accuracy, embedding, activations, hiddenStates, pooling };
        command.SetAction(r => Guard(() =>
        {
            var quantization = r.GetValue(precision) switch
            {
                "fp32" or "fp16" => null,
                "int8" or "int4" => new Modeling.Quantization.QuantizationOptions
                {
                    Bits = r.GetValue(precision) == "int8" ? 8 : 4, BlockSize = r.GetValue(blockSize), Symmetric = !r.GetValue(asymmetric), AccuracyLevel = r.GetValue(accuracy),
                    SearchScales = !r.GetValue(nearestScales),
                    QuantizeEmbedding = r.GetValue(embedding) switch
                    {
                        "auto" => null, "quantized" => true, "float" => false,
                        var e => throw new ArgumentException($"--embedding {e} is not known: use quantized, float or auto"),
                    },
                }.Validate(),
                var p => throw new ArgumentException($"--precision {p} is not supported: use fp32, fp16, int8 or int4"),
            };
            var options = new ExportOptions
            {
                Lowering = ParseLowering(r.GetValue(lowering)!), MaxLength = r.GetValue(maxLength), Target = ParseTarget(r.GetValue(target)!),
                Quantization = quantization,
                Float16 = r.GetValue(precision) == "fp16" || r.GetValue(activations) switch
                {
                    "fp32" => false, "fp16" => true,
                    var a => throw new ArgumentException($"--activations {a} is not known: use fp32 or fp16"),
                },
                HiddenStatesOutput = r.GetValue(hiddenStates),
                // An explicit --pooling wins; otherwise the checkpoint's own pooling config, else last.
                Pooling = r.GetResult(pooling) is { Implicit: false } || !r.GetValue(hiddenStates)
                    ? ParsePooling(r.GetValue(pooling)!)
                    : Exporters.SafeTensors.SentenceTransformersPooling.Read(r.GetValue(checkpoint)!) ?? EmbeddingPooling.Last,
            };
            RunExport(r.GetValue(checkpoint)!, r.GetValue(tokenizer), r.GetValue(output)!, options, r.GetValue(allowNonFinite));
            return 0;
        }));
        return command;
    }

    private static ExportReport RunExport(string checkpointPath, string? tokenizerPath, string outDir, ExportOptions options, bool allowNonFinite = false)
    {
        using var checkpoint = Checkpoint.Open(checkpointPath, tokenizerPath);
        ExportReport? report = null;
        if (AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected)
        {
            if (checkpoint.TextDecoderOf is { } textDecoderOf) Console.WriteLine(textDecoderOf);   // the log below says it otherwise
            AnsiConsole.Progress().Start(context =>
            {
                var task = context.AddTask($"export {Path.GetFileName(Path.TrimEndingDirectorySeparator(checkpointPath))}", maxValue: 1);
                report = ModelFolderWriter.Write(outDir, checkpoint, options,
                    progress: (done, total) => task.Value = total == 0 ? 1 : (double)done / total, allowNonFinite: allowNonFinite);
                task.Value = 1;
            });
        }
        else
        {
            long lastReported = -1;
            report = ModelFolderWriter.Write(outDir, checkpoint, options, log: Console.WriteLine, progress: (done, total) =>
                {
                    long percent = total == 0 ? 100 : done * 100 / total;
                    if (percent / 25 != lastReported / 25) Console.WriteLine($"  weights written: {percent}%");
                    lastReported = percent;
                }, allowNonFinite: allowNonFinite);
        }
        Console.WriteLine($"exported {checkpoint.Format} {checkpoint.Config} -> {report!.Directory} ({report.NodeCount} nodes, {report.WeightBytes / 1048576.0:F1} MiB of weights, {report.Elapsed.TotalSeconds:F1} s)");
        return report;
    }

    private static Command ExportCard()
    {
        var card = new Option<string>("--card") { Description = "model card JSON in models/", Required = true };
        var output = new Option<string>("--out") { Description = "model folder to write", Required = true };
        var checkpoints = new Option<string?>("--checkpoint-dir") { Description = "where a synth card's checkpoint is written (default: checkpoints/<name> beside the --out folder's parent)" };
        var command = new Command("export-card", "Export the model a card in models/ describes (used by `dotnet cake --target=Export-Models`)") { card, output, checkpoints };
        command.SetAction(r => Guard(() =>
        {
            var modelCard = ModelCard.Read(r.GetValue(card)!);
            string outDir = Path.GetFullPath(r.GetValue(output)!);
            ExportFromCard(modelCard, outDir, r.GetValue(checkpoints) ?? Path.Combine(Path.GetDirectoryName(Path.GetDirectoryName(outDir)!)!, "checkpoints", modelCard.Name));
            return 0;
        }));
        return command;
    }

    /// <summary>Exports a card's model into <paramref name="modelDir"/>; a synth card's checkpoint is written to <paramref name="checkpointDir"/> first.</summary>
    private static ExportReport ExportFromCard(ModelCard card, string modelDir, string checkpointDir)
    {
        string checkpoint = card.Checkpoint ?? checkpointDir;
        if (card.SynthPreset is { } preset)
        {
            Console.WriteLine($"synth {preset} (seed {card.Seed}): random weights -> {checkpoint}");
            SynthPresets.Write(preset, card.Seed, checkpoint);
        }
        return RunExport(checkpoint, card.Tokenizer, modelDir, new ExportOptions { Lowering = card.Lowering, MaxLength = card.MaxLength });
    }

    // ---- generate, chat ------------------------------------------------------------------------

    /// <summary>One CLI flag per row of <see cref="SamplingParameters"/>; a flag not given keeps the model
    /// folder's default (genai_config.json's search values), else the table's.</summary>
    private sealed class SamplingFlags(IReadOnlyList<(SamplingParameter Parameter, Option<double?> Option)> flags)
    {
        public static SamplingFlags Create() => new(SamplingParameters.All.Select(p => (p, new Option<double?>(p.Flag)
        {
            Description = $"{p.Description}; {p.RangeText}{(p.Default is { } d ? $" (default {SamplingParameter.Format(d)}, or the model folder's search value)" : "")}",
        })).ToList());

        public IEnumerable<Option> Options => flags.Select(f => f.Option);

        public SamplingOptions Read(ParseResult r, SamplingOptions defaults)
        {
            var options = defaults;
            foreach (var (parameter, option) in flags)
            {
                if (r.GetValue(option) is not { } value) continue;
                if (!parameter.Contains(value)) throw new ArgumentException(parameter.OutOfRangeMessage(parameter.Flag, value));
                options = options.Set(parameter, value);
            }
            return options.Validate();
        }
    }

    private static Option<string> ModelOption() => new("--model") { Description = "model folder written by `export`", Required = true };
    private static Option<string> ProviderOption() => new("--ep") { Description = "execution providers in order of preference, e.g. cuda,cpu", DefaultValueFactory = _ => "cpu" };

    internal static Option<string> NativeKernelsOption() => new("--native-kernels")
    {
        Description = "on (default): on the CPU, our fused ops (qkv split + rotary, SiLU gate) from libonnxdecoder_kernels.so where " +
            "the build shipped it; matmul: also int4/int8 MatMulNBits (accuracy level 4, block 32) on our matmul kernel; off: the graph " +
            "as exported on ONNX Runtime's kernels",
        DefaultValueFactory = _ => "on",
    };

    /// <summary>--native-kernels on|matmul|off: (ExecutionProviderOptions.NativeKernels, NativeMatMul).</summary>
    internal static (bool Kernels, bool MatMul) ParseNativeKernels(string value) => value.ToLowerInvariant() switch
    {
        "on" => (true, false),
        "matmul" => (true, true),
        "off" => (false, false),
        _ => throw new ArgumentException($"--native-kernels '{value}' is not known: use on, matmul or off"),
    };

    /// <summary>The execution provider options of generate, chat and bench: --ep and --native-kernels.</summary>
    private static ExecutionProviderOptions Providers(string list, string nativeKernels)
    {
        var preference = list.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(ExecutionProviderOptions.Parse).ToList();
        var (kernels, matMul) = ParseNativeKernels(nativeKernels);
        return new ExecutionProviderOptions { Preference = preference, AllowFallback = preference.Count > 1, NativeKernels = kernels, NativeMatMul = matMul };
    }

    private static Command Generate()
    {
        var model = ModelOption();
        var prompt = new Option<string?>("--prompt") { Description = "the prompt (BOS is prepended); needs the folder's tokenizer files" };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "the prompt as comma-separated token ids, used as given (no BOS added); runs without tokenizer files" };
        var maxTokens = new Option<int?>("--max-tokens") { Description = "tokens to generate at most (default 128, within the folder's search.max_length)" };
        var stop = new Option<string[]>("--stop") { Description = "stop when the text contains this string (repeatable)", AllowMultipleArgumentsPerToken = false };
        var format = new Option<string>("--format") { Description = "text (streamed) or json", DefaultValueFactory = _ => "text" };
        var ep = ProviderOption();
        var sampling = SamplingFlags.Create();
        var jsonSchema = new Option<string?>("--json-schema") { Description = "constrain the output to JSON that satisfies this JSON Schema file" };
        var anyJson = new Option<bool>("--json") { Description = "constrain the output to one JSON value" };
        var profile = new Option<string?>("--profile") { Description = "write ONNX Runtime's per-node profile (Chrome trace JSON) to a file whose name starts with this prefix" };
        var speculative = SpeculativeOption();
        var draftTokens = DraftTokensOption();
        var nativeKernels = NativeKernelsOption();
        var command = new Command("generate", "Generate text from a prompt")
            { model, prompt, promptIds, maxTokens, stop, format, ep, nativeKernels, jsonSchema, anyJson, profile, speculative, draftTokens };
        foreach (var option in sampling.Options) command.Options.Add(option);
        command.SetAction(r => Guard(() =>
        {
            string? promptText = r.GetValue(prompt);
            int[]? ids = r.GetValue(promptIds) is { } idList ? ParseTokenIds(idList) : null;
            if ((promptText is null) == (ids is null)) throw new ArgumentException("give --prompt TEXT or --prompt-ids 1,2,3 (one of them)");
            var providers = Providers(r.GetValue(ep)!, r.GetValue(nativeKernels)!) with { ProfileFilePrefix = r.GetValue(profile) };
            using var session = new DecoderSession(r.GetValue(model)!, new DecoderSessionOptions { Providers = providers });
            // Token ids need no tokenizer; text does, and Load's error names the files it looked for.
            var tokenizer = ids is null ? TextTokenizer.Load(session.Folder.Directory, session.Folder.BosTokenId)
                : TextTokenizer.LoadIfPresent(session.Folder.Directory, session.Folder.BosTokenId);
            var input = ids ?? tokenizer!.Encode(promptText!, addBos: true);
            var options = new GenerationOptions
            {
                MaxNewTokens = session.Folder.Search.MaxNewTokens(input.Length, r.GetValue(maxTokens), 128),
                Sampling = sampling.Read(r, session.Folder.Search.Sampling), StopStrings = r.GetValue(stop) ?? [],
                Constraint = OutputConstraint(r.GetValue(jsonSchema), r.GetValue(anyJson)),
                Speculation = SpeculativeBenchmark.Options(r.GetValue(speculative), r.GetValue(draftTokens), providers, out var draft),
            };
            using var ownedDraft = draft;
            bool json = r.GetValue(format) switch { "json" => true, "text" => false, var f => throw new ArgumentException($"--format '{f}' is not known: use text or json") };
            using var cancel = new CancellationTokenSource();
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
            if (!json && promptText is not null) Console.Write(promptText);
            var result = new Generator(session, tokenizer).Generate(input, options, json ? null : token => Console.Write(token.Text), cancel.Token);
            if (!json && tokenizer is null) Console.Write(string.Join(",", result.TokenIds)); // no tokenizer: the ids are the output
            if (json) Console.WriteLine(ResultJson(result).ToJsonString());
            else Console.WriteLine();
            if (!json && result.Speculation is { } stats)
                Console.Error.WriteLine($"speculative ({stats.Drafter}): {stats.Accepted} of {stats.Drafted} drafts accepted ({stats.AcceptanceRate:P1}) in {stats.Rounds} rounds");
            return 0;
        }));
        return command;
    }

    /// <summary>--prompt-ids "1,2,3": token ids, checked against the vocabulary when the session runs them.</summary>
    private static int[] ParseTokenIds(string list)
    {
        var parts = list.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new ArgumentException("--prompt-ids is empty: give comma-separated token ids, e.g. 1,403,407");
        return parts.Select(p => int.TryParse(p, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id) ? id
            : throw new ArgumentException($"--prompt-ids: '{p}' is not a token id (a non-negative whole number)")).ToArray();
    }

    /// <summary>The constraint --json-schema FILE or --json asks for (null: none).</summary>
    private static Runtime.Sampling.Constraints.ILogitsConstraint? OutputConstraint(string? schemaPath, bool anyJson)
    {
        if (schemaPath is not null && anyJson) throw new ArgumentException("give --json-schema FILE or --json, not both (a schema already implies JSON)");
        if (anyJson) return Runtime.Sampling.Constraints.GrammarConstraint.Json();
        if (schemaPath is null) return null;
        if (!File.Exists(schemaPath)) throw new FileNotFoundException($"--json-schema {schemaPath}: no such file");
        return Runtime.Sampling.Constraints.GrammarConstraint.JsonSchema(File.ReadAllText(schemaPath), schemaPath);
    }

    public static JsonObject ResultJson(GenerationResult result) => new()
    {
        ["prompt_token_ids"] = new JsonArray(result.PromptTokenIds.Select(i => (JsonNode)i).ToArray()),
        ["token_ids"] = new JsonArray(result.TokenIds.Select(i => (JsonNode)i).ToArray()),
        ["text"] = result.Text,
        ["stop_reason"] = result.StopReason switch
        {
            StopReason.Eos => "eos", StopReason.MaxTokens => "max_tokens", StopReason.StopString => "stop_string", _ => "context_full",
        },
        ["timings"] = new JsonObject
        {
            ["prefill_ms"] = Math.Round(result.Timings.PrefillMs, 3),
            ["decode_ms"] = Math.Round(result.Timings.DecodeMs, 3),
            ["ttft_ms"] = Math.Round(result.Timings.TimeToFirstTokenMs, 3),
            ["prefill_tokens_per_s"] = Math.Round(result.Timings.PrefillTokensPerSecond, 1),
            ["decode_tokens_per_s"] = Math.Round(result.Timings.DecodeTokensPerSecond, 1),
        },
        ["speculation"] = result.Speculation is { } s ? new JsonObject
        {
            ["drafter"] = s.Drafter, ["rounds"] = s.Rounds, ["drafted"] = s.Drafted, ["accepted"] = s.Accepted,
            ["acceptance_rate"] = Math.Round(s.AcceptanceRate, 4),
        } : null,
    };

    private static int[] ParseLevels(string levels) => levels.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(l => int.TryParse(l, out int n) ? n : throw new ArgumentException($"--concurrent '{levels}' is not a list of numbers, e.g. 1,8")).ToArray();

    internal static Option<string?> SpeculativeOption() => new("--speculative")
        { Description = "speculative decoding: ngram (prompt lookup: drafts copied from the context) or MODEL_DIR (a smaller export with the same tokenizer)" };
    internal static Option<int> DraftTokensOption() => new("--draft-tokens") { Description = "tokens drafted per round (k) with --speculative", DefaultValueFactory = _ => 3 };

    private static Command Chat()
    {
        var model = ModelOption();
        var maxTokens = new Option<int>("--max-tokens") { Description = "tokens per reply at most", DefaultValueFactory = _ => 128 };
        var system = new Option<string?>("--system") { Description = "system message" };
        var ep = ProviderOption();
        var sampling = SamplingFlags.Create();
        var nativeKernels = NativeKernelsOption();
        var command = new Command("chat", "Interactive chat in the model family's prompt format; each turn reuses the cached conversation") { model, maxTokens, system, ep, nativeKernels };
        foreach (var option in sampling.Options) command.Options.Add(option);
        command.SetAction(r => Guard(() =>
        {
            using var session = new DecoderSession(r.GetValue(model)!, new DecoderSessionOptions { Providers = Providers(r.GetValue(ep)!, r.GetValue(nativeKernels)!) });
            var tokenizer = TextTokenizer.Load(session.Folder.Directory, session.Folder.BosTokenId);
            var prompt = ChatPrompt.ForModel(session.Folder.Directory, tokenizer);
            var generator = new Generator(session, tokenizer);
            var options = new GenerationOptions { MaxNewTokens = r.GetValue(maxTokens), Sampling = sampling.Read(r, session.Folder.Search.Sampling) };
            var messages = new List<ChatMessage>();
            if (r.GetValue(system) is { Length: > 0 } text) messages.Add(new ChatMessage("system", text));
            Console.Error.WriteLine($"chat format: {prompt.Description}; type a message and press enter; an empty line or end of input quits");
            while (Console.ReadLine() is { Length: > 0 } line)
            {
                messages.Add(new ChatMessage("user", line));
                var result = generator.Respond(prompt.Encode(messages, tokenizer), options, t => Console.Write(t.Text));
                Console.WriteLine();
                messages.Add(new ChatMessage("assistant", result.Text));
                if (result.StopReason == StopReason.ContextFull) { Console.Error.WriteLine("the context is full"); break; }
            }
            return 0;
        }));
        return command;
    }

    // ---- bench -----------------------------------------------------------------------------------

    private static Command Bench()
    {
        var model = new Option<string[]>("--model") { Description = "model folder; repeat to measure several side by side (runs alternate)", Required = true, AllowMultipleArgumentsPerToken = false };
        var promptTokens = new Option<int>("--prompt-tokens") { DefaultValueFactory = _ => 128 };
        var genTokens = new Option<int>("--gen-tokens") { DefaultValueFactory = _ => 128 };
        var runs = new Option<int>("--runs") { DefaultValueFactory = _ => 5 };
        var format = new Option<string>("--format") { DefaultValueFactory = _ => "text" };
        var ep = ProviderOption();
        var threads = new Option<int>("--threads") { Description = "intra-op threads (0: ONNX Runtime's default)" };
        var concurrent = new Option<string?>("--concurrent") { Description = "continuous batching: comma-separated numbers of concurrent requests to compare, e.g. 1,8" };
        var jsonSchema = new Option<string?>("--json-schema") { Description = "measure decoding with and without this JSON Schema's constraint, and the constraint's cost per token" };
        var speculative = SpeculativeOption();
        var draftTokens = DraftTokensOption();
        var nativeKernels = NativeKernelsOption();
        var command = new Command("bench", "Measure prefill and decode speed, time to first token, peak memory and allocations per token (median of N runs)")
            { model, promptTokens, genTokens, runs, format, ep, nativeKernels, threads, concurrent, jsonSchema, speculative, draftTokens };
        command.SetAction(r => Guard(() =>
        {
            var providers = Providers(r.GetValue(ep)!, r.GetValue(nativeKernels)!) with { IntraOpThreads = r.GetValue(threads) };
            var models = r.GetValue(model)!;
            if (r.GetValue(jsonSchema) is { } schemaPath)
            {
                if (models.Length != 1 || r.GetValue(concurrent) is not null) throw new ArgumentException("--json-schema measures one --model, without --concurrent");
                var constrained = ConstraintBenchmark.Run(models[0], schemaPath, r.GetValue(promptTokens), r.GetValue(genTokens), r.GetValue(runs), providers);
                Console.WriteLine(r.GetValue(format) == "json" ? constrained.ToJsonString() : ConstraintBenchmark.Describe(constrained));
                return 0;
            }
            if (r.GetValue(speculative) is { } drafter)
            {
                if (models.Length != 1) throw new ArgumentException("--speculative measures one --model");
                if (r.GetValue(concurrent) is { } batchLevels)
                {
                    var inBatch = SpeculativeBatchBenchmark.Run(models[0], drafter, r.GetValue(draftTokens), ParseLevels(batchLevels), r.GetValue(genTokens), r.GetValue(runs), providers);
                    Console.WriteLine(r.GetValue(format) == "json" ? inBatch.ToJsonString() : SpeculativeBatchBenchmark.Describe(inBatch));
                    return 0;
                }
                var measured = SpeculativeBenchmark.Run(models[0], drafter, r.GetValue(draftTokens), r.GetValue(genTokens), r.GetValue(runs), providers);
                Console.WriteLine(r.GetValue(format) == "json" ? measured.ToJsonString() : SpeculativeBenchmark.Describe(measured));
                return 0;
            }
            if (r.GetValue(concurrent) is { } levels)
            {
                if (models.Length != 1) throw new ArgumentException("--concurrent measures one --model");
                var parsed = ParseLevels(levels);
                var batched = Benchmark.RunConcurrent(models[0], r.GetValue(promptTokens), r.GetValue(genTokens), r.GetValue(runs), parsed, providers);
                Console.WriteLine(r.GetValue(format) == "json" ? batched.ToJsonString() : string.Join("\n", batched.Select(c =>
                    $"{c!["concurrent_sequences"]} concurrent: aggregate decode {c["aggregate_decode_tokens_per_s"]} tok/s (x{c["ratio_to_first"]} of the first), end to end {c["end_to_end_tokens_per_s"]} tok/s")));
                return 0;
            }
            if (models.Length > 1)
            {
                var compared = Benchmark.RunAlternating(models, r.GetValue(promptTokens), r.GetValue(genTokens), r.GetValue(runs), providers);
                Console.WriteLine(r.GetValue(format) == "json" ? compared.ToJsonString() : string.Join("\n", compared.Select(c =>
                    $"{c!["model"]}: decode {c["decode_tokens_per_s"]} tok/s (x{c["ratio_to_first"]} of the first), reads {c["weight_bytes_read_per_step"]} bytes/step, " +
                    $"ceiling {c["bandwidth_ceiling_tokens_per_s"]} tok/s at {c["copy_bandwidth_gb_per_s"]} GB/s copy bandwidth: {c["fraction_of_ceiling"]} of it")));
                return 0;
            }
            var result = Benchmark.Run(models[0], r.GetValue(promptTokens), r.GetValue(genTokens), r.GetValue(runs), providers);
            Console.WriteLine(r.GetValue(format) == "json" ? result.ToJsonString() : Benchmark.Describe(result));
            return 0;
        }));
        return command;
    }

    private static Command Soak()
    {
        var model = ModelOption();
        var generations = new Option<int>("--generations") { DefaultValueFactory = _ => 2000 };
        var tokens = new Option<int>("--tokens") { Description = "tokens per generation", DefaultValueFactory = _ => 32 };
        var warmup = new Option<int>("--warmup") { DefaultValueFactory = _ => 200 };
        var reopen = new Option<int>("--reopen-every") { Description = "open a new session every N generations (0: never)", DefaultValueFactory = _ => 250 };
        var shared = new Option<bool>("--share-thread-pool") { Description = "run all sessions on one process-wide ONNX Runtime thread pool" };
        var command = new Command("soak", "Leak check: many generations in one process; reports managed heap and RSS growth and OrtValues created/disposed (JSON)")
            { model, generations, tokens, warmup, reopen, shared };
        command.SetAction(r => Guard(() =>
        {
            Console.WriteLine(Cli.Soak.Run(r.GetValue(model)!, r.GetValue(generations), r.GetValue(tokens), r.GetValue(warmup), r.GetValue(reopen), r.GetValue(shared)).ToJsonString());
            return 0;
        }));
        return command;
    }

    // ---- synth, inspect, demo ----------------------------------------------------------------

    private static Command Synth()
    {
        var preset = new Option<string>("--preset") { Description = $"one of: {string.Join(", ", SynthPresets.All.Keys)}", Required = true };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Required = true };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "a Hugging Face tokenizer folder (tokenizer.json, tokenizer_config.json) to use instead of the GPT-2 one; the vocabulary is sized to it" };
        var command = new Command("synth", "Write a seeded random checkpoint in Hugging Face layout (config.json, model.safetensors, tokenizer)") { preset, seed, output, tokenizer };
        command.SetAction(r => Guard(() =>
        {
            SynthPresets.Write(r.GetValue(preset)!, r.GetValue(seed), r.GetValue(output)!, r.GetValue(tokenizer));
            Console.WriteLine($"wrote {r.GetValue(preset)} (seed {r.GetValue(seed)}, random weights) to {Path.GetFullPath(r.GetValue(output)!)}");
            return 0;
        }));
        return command;
    }

    private static Command Inspect()
    {
        var path = new Argument<string>("path") { Description = "model folder, .onnx file, llama2.c .bin or Hugging Face folder" };
        var command = new Command("inspect", "Describe a model folder, ONNX file or checkpoint") { path };
        command.SetAction(r => Guard(() =>
        {
            Console.WriteLine(Inspection.Describe(r.GetValue(path)!));
            return 0;
        }));
        return command;
    }

    private static Command Demo()
    {
        var output = new Option<string>("--out") { DefaultValueFactory = _ => "artifacts/demo" };
        var card = new Option<string>("--card") { Description = "model card to run", DefaultValueFactory = _ => "models/demo.json" };
        var command = new Command("demo", "The main job on the embedded default: synthesise the demo model, export it, and generate from it") { output, card };
        command.SetAction(r => Guard(() =>
        {
            var modelCard = File.Exists(r.GetValue(card)!) ? ModelCard.Read(r.GetValue(card)!)
                : new ModelCard("demo", "built-in default", "llama-tiny", 1, null, null, Lowering.Ort, null);
            string outDir = r.GetValue(output)!;
            var report = ExportFromCard(modelCard, Path.Combine(outDir, "model"), Path.Combine(outDir, "checkpoint"));
            using var session = new DecoderSession(report.Directory);
            var tokenizer = TextTokenizer.Load(report.Directory, session.Folder.BosTokenId);
            Console.WriteLine();
            if (modelCard.SynthPreset is not null)
                Console.WriteLine($"note: '{modelCard.Name}' has random weights (synth preset {modelCard.SynthPreset}, seed {modelCard.Seed}): the text below is not meant to read well.");
            const string prompt = "Once upon a time";
            Console.Write(prompt);
            var result = new Generator(session, tokenizer).Generate(prompt, new GenerationOptions { MaxNewTokens = 48 }, t => Console.Write(t.Text));
            Console.WriteLine();
            Console.WriteLine($"[{result.TokenIds.Length} tokens, stop: {result.StopReason}, prefill {result.Timings.PrefillMs:F1} ms, decode {result.Timings.DecodeTokensPerSecond:F0} tok/s]");
            Console.WriteLine($"model folder: {report.Directory}");
            return 0;
        }));
        return command;
    }
}
