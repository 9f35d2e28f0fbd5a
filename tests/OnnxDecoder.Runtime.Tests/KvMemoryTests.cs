using Microsoft.ML.OnnxRuntime;
using OnnxDecoder.Exporters.Tests;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Memory;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>Where KV memory comes from and what moves it: buffers from the session's allocator, views
/// made once, prompts prefilled straight into their batch row, and graphs without position_ids.</summary>
public class KvMemoryTests
{
    private static readonly string[] Prompts =
    [
        "Once upon a time", "The little dog", "One day, Lily went to the park with her mom and", "Tom and his friend",
        "The sun", "A big red ball rolled down the hill and the children", "She was sad", "Every morning the cat",
    ];

    [Test]
    public void A_sessions_KV_is_allocated_once_by_the_sessions_allocator_and_decode_steps_make_no_views()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        using var session = new DecoderSession(folder);
        var memory = session.Model.Memory;
        Assert.That(memory.Kv.Place, Is.EqualTo(MemoryPlace.Host));
        // ONNX Runtime's own CPU arena for this session, not memory we allocated ourselves.
        Assert.That(memory.Kv.Info.GetAllocatorType(), Is.EqualTo(OrtAllocatorType.ArenaAllocator));
        var generator = new Generator(session, TextTokenizer.Load(folder, session.Folder.BosTokenId));
        var first = generator.Generate(Stories260K.Golden().PromptIds, new GenerationOptions { MaxNewTokens = 3 });
        var afterWarmUp = session.KvStatistics;
        long ledgerViews = OrtValueLedger.KvViewsCreated;
        var result = generator.Generate(Stories260K.Golden().PromptIds, new GenerationOptions { MaxNewTokens = 80 });
        var after = session.KvStatistics;
        Assert.That(result.TokenIds, Is.EqualTo(Stories260K.Golden().GeneratedIds.Take(80)));
        Assert.That(after.Buffers, Is.EqualTo(session.Folder.NumLayers * 2), "one shared past/present buffer per layer and kind");
        Assert.That(afterWarmUp.ViewsCreated, Is.EqualTo(session.Folder.NumLayers * 2), "one view per buffer, made at the first run");
        Assert.That(after.ViewsCreated, Is.EqualTo(afterWarmUp.ViewsCreated), "80 decode steps made no KV view");
        Assert.That(OrtValueLedger.KvViewsCreated - ledgerViews, Is.Zero, "nothing else made KV views meanwhile");
        Assert.That(after.SegmentsCopied, Is.Zero);
        Assert.That(first.TokenIds, Has.Length.EqualTo(3));
    }

    [Test]
    public void Decode_steps_of_a_session_allocate_no_managed_memory()
    {
        using var session = new DecoderSession(Fixtures.Stories(Lowering.Ort), new DecoderSessionOptions { MaxLength = 200 });
        var (promptIds, _) = Stories260K.Golden();
        var step = new long[1];
        for (int run = 0; run < 2; run++) // the first run makes the views of every mask width
        {
            session.Reset();
            session.Append(promptIds.Select(i => (long)i).ToArray(), promptIds.Length);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 100; i++)
            {
                step[0] = 3 + i;
                session.Step(step);
            }
            long perStep = (GC.GetAllocatedBytesForCurrentThread() - before) / 100;
            if (run == 1) Assert.That(perStep, Is.LessThan(64), "bytes allocated per decode step");
        }
    }

    [Test]
    public void A_step_reports_the_time_of_its_run_inside_its_own_wall_time()
    {
        using var session = new DecoderSession(Fixtures.Stories(Lowering.Ort), new DecoderSessionOptions { MaxLength = 64 });
        session.Append([session.Folder.BosTokenId], 1);
        var step = new long[1];
        for (int i = 0; i < 20; i++)
        {
            step[0] = 3 + i;
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            session.Step(step);
            var wall = System.Diagnostics.Stopwatch.GetElapsedTime(start);
            Assert.That(session.LastRunTime, Is.GreaterThan(TimeSpan.Zero).And.LessThanOrEqualTo(wall), $"step {i}");
        }
    }

    [Test]
    public async Task Prompts_reach_their_batch_rows_without_a_copy_and_steps_reuse_every_view()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 4 });
        Task<GenerationResult[]> Wave(int tokens) => Task.WhenAll(Prompts.Select(p =>
            batcher.GenerateAsync(tokenizer.Encode(p, addBos: true), new GenerationOptions { MaxNewTokens = tokens })));
        await Wave(4); // every row count and every row's view once
        var warm = batcher.KvStatistics;
        long steps = batcher.Steps;
        var results = await Wave(30);
        var after = batcher.KvStatistics;
        Assert.That(batcher.Steps - steps, Is.GreaterThan(30), "the wave decoded");
        Assert.That(after.ViewsCreated, Is.EqualTo(warm.ViewsCreated), "no KV view was made for a step or a prompt after warm-up");
        Assert.That(after.ViewsCreated, Is.LessThanOrEqualTo(model.Folder.NumLayers * 2 * (4 + 4)), "views per row count and per row, nothing more");
        Assert.That(after.SegmentsCopied, Is.Zero, "prompts that share only BOS were prefilled in their rows: no KV copied");
        Assert.That(after.Buffers, Is.EqualTo(model.Folder.NumLayers * 2), "one cache for every row and every prompt");
        using var single = new DecoderSession(model);
        var alone = new Generator(single, tokenizer);
        for (int i = 0; i < Prompts.Length; i++)
            Assert.That(results[i].TokenIds, Is.EqualTo(alone.Generate(Prompts[i], new GenerationOptions { MaxNewTokens = 30 }).TokenIds), Prompts[i]);
    }

    [Test]
    public async Task The_shared_timeline_copies_each_prompt_once_per_head_and_never_per_step()
    {
        string folder = Fixtures.Stories(Lowering.Portable);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 2 });
        var prompt = tokenizer.Encode(Prompts[0], addBos: true);
        var result = await batcher.GenerateAsync(prompt, new GenerationOptions { MaxNewTokens = 40 });
        var stats = batcher.KvStatistics;
        Assert.That(result.TokenIds, Is.EqualTo(Stories260K.Golden().GeneratedIds.Take(40)));
        // One placement: every layer and kind, one segment per kv head; 40 decode steps copied nothing.
        Assert.That(stats.SegmentsCopied, Is.EqualTo(model.Folder.NumLayers * 2 * model.Folder.NumKvHeads));
        Assert.That(stats.BytesCopied, Is.EqualTo((long)model.Folder.NumLayers * 2 * model.Folder.NumKvHeads * prompt.Length * model.Folder.HeadSize * 4));
    }

    /// <summary>
    /// onnxruntime-genai folders may compute positions inside the graph. python3-onnx rewrites the ort
    /// export so that position_ids is no graph input but CumSum(attention_mask) - 1 over the new columns;
    /// the runtime must run it, alone and batched, to llama2.c's tokens.
    /// </summary>
    [Test]
    public async Task A_folder_whose_graph_has_no_position_ids_runs_to_the_golden_tokens()
    {
        string source = Fixtures.Stories(Lowering.Ort);
        string folder = Path.Combine(Fixtures.Root, "stories260k-ort-no-position-ids");
        if (!Directory.Exists(folder))
        {
            Directory.CreateDirectory(folder);
            foreach (var file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
            const string script = """
                import sys, onnx
                from onnx import helper, TensorProto
                path = sys.argv[1]
                m = onnx.load(path)
                g = m.graph
                kept = [i for i in g.input if i.name != 'position_ids']
                assert len(kept) == len(g.input) - 1, 'no position_ids input'
                del g.input[:]
                g.input.extend(kept)
                nodes = [
                    helper.make_node('Constant', [], ['pos/one'], value=helper.make_tensor('one', TensorProto.INT64, [], [1])),
                    helper.make_node('Constant', [], ['pos/axis'], value=helper.make_tensor('axis', TensorProto.INT64, [], [1])),
                    helper.make_node('Constant', [], ['pos/axes'], value=helper.make_tensor('axes', TensorProto.INT64, [1], [1])),
                    helper.make_node('Constant', [], ['pos/end'], value=helper.make_tensor('end', TensorProto.INT64, [1], [2**62])),
                    helper.make_node('CumSum', ['attention_mask', 'pos/axis'], ['pos/cumsum']),
                    helper.make_node('Sub', ['pos/cumsum', 'pos/one'], ['pos/all']),
                    helper.make_node('Shape', ['input_ids'], ['pos/shape']),
                    helper.make_node('Slice', ['pos/shape', 'pos/axes', 'pos/axes_end', 'pos/zero_axis'], ['pos/length']),
                    helper.make_node('Neg', ['pos/length'], ['pos/start']),
                    helper.make_node('Slice', ['pos/all', 'pos/start', 'pos/end', 'pos/axes'], ['position_ids']),
                ]
                nodes.insert(3, helper.make_node('Constant', [], ['pos/axes_end'], value=helper.make_tensor('axes_end', TensorProto.INT64, [1], [2])))
                nodes.insert(4, helper.make_node('Constant', [], ['pos/zero_axis'], value=helper.make_tensor('zero_axis', TensorProto.INT64, [1], [0])))
                old = list(g.node)
                del g.node[:]
                g.node.extend(nodes + old)
                onnx.save(m, path)
                print('ok')
                """;
            var (code, output) = PythonOnnx.Run(script, Path.Combine(folder, "model.onnx"));
            Assert.That(code, Is.Zero, output);
            // Such a folder's genai_config.json names no position_ids input either (one that did would be refused).
            string configPath = Path.Combine(folder, "genai_config.json");
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(configPath))!;
            Assert.That(config["model"]!["decoder"]!["inputs"]!.AsObject().Remove("position_ids"), Is.True, "the export names position_ids");
            File.WriteAllText(configPath, config.ToJsonString());
        }
        using var model = new DecoderModel(folder);
        Assert.That(model.HasPositionIds, Is.False);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        var (promptIds, golden) = Stories260K.Golden();
        using (var session = new DecoderSession(model))
            Assert.That(new Generator(session, tokenizer).Generate(promptIds, new GenerationOptions { MaxNewTokens = 100 }).TokenIds, Is.EqualTo(golden.Take(100)));
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 3 });
        var together = await Task.WhenAll(Enumerable.Range(0, 3).Select(i =>
            batcher.GenerateAsync(promptIds, new GenerationOptions { MaxNewTokens = 60 + 20 * i })));
        for (int i = 0; i < 3; i++) Assert.That(together[i].TokenIds, Is.EqualTo(golden.Take(60 + 20 * i)), $"batched request {i}");
    }
}
