using System.Collections.Concurrent;
using OnnxDecoder.Exporters;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>Batched prefill in the continuous batcher: prompts queued together are prefilled side by side in
/// one run where the lowering allows (rows that keep their own lengths, right padded), under the per-step token
/// budget, and every sequence still generates exactly what it generates alone.</summary>
public class BatchedPrefillTests
{
    private static string Folder(string model, Lowering lowering) => model == "stories260K" ? Fixtures.Stories(lowering) : Fixtures.SynthLlamaTiny(lowering);

    /// <summary>BOS and then <paramref name="length"/> - 1 ids drawn from the vocabulary (no end token, so outputs have fixed lengths).</summary>
    private static int[] Prompt(ModelFolder folder, int length, int seed)
    {
        var random = new Random(seed);
        var ids = new int[length];
        ids[0] = folder.BosTokenId;
        for (int i = 1; i < length; i++)
        {
            int id;
            do id = random.Next(3, folder.VocabSize); while (folder.EosTokenIds.Contains(id));
            ids[i] = id;
        }
        return ids;
    }

    private static GenerationOptions Tokens(int count) => new() { MaxNewTokens = count, EosTokenIds = [] };

    /// <summary>
    /// Opens a batcher whose first prefill run (a holding request's) blocks until <paramref name="queue"/> has
    /// submitted the prompts under test, so they wait together when the scheduler forms its next run; the
    /// holding request then decodes beside them. Returns every prefill run in order (the holding one first).
    /// </summary>
    private static async Task<(GenerationResult[] Results, PrefillRunInfo[] Runs)> RunQueued(DecoderModel model, TextTokenizer tokenizer, int[] holding,
        (int[] Prompt, int Tokens)[] requests, int sequences, int budget = 0, int prefillChunk = 0)
    {
        var runs = new ConcurrentQueue<PrefillRunInfo>();
        using var queued = new ManualResetEventSlim();
        using var blocked = new ManualResetEventSlim();
        var options = new BatcherOptions
        {
            MaxSequences = sequences, StepTokenBudget = budget, PrefillChunk = prefillChunk,
            PrefillObserver = info =>
            {
                runs.Enqueue(info);
                if (runs.Count == 1)
                {
                    blocked.Set();
                    Assert.That(queued.Wait(TimeSpan.FromSeconds(60)), "the prompts were queued");
                }
            },
        };
        using var batcher = new ContinuousBatcher(model, tokenizer, options);
        var hold = batcher.GenerateAsync(holding, Tokens(200));
        Assert.That(blocked.Wait(TimeSpan.FromSeconds(60)), "the holding request's prefill ran");
        var pending = requests.Select(r => batcher.GenerateAsync(r.Prompt, Tokens(r.Tokens))).ToArray();
        queued.Set();
        var results = await Task.WhenAll(pending).WaitAsync(TimeSpan.FromSeconds(120));
        await hold.WaitAsync(TimeSpan.FromSeconds(120));
        Assert.That(batcher.PrefillRuns, Is.EqualTo(runs.Count));
        Assert.That(batcher.PrefillRunRows, Is.EqualTo(runs.Sum(r => r.Prompts)));
        return (results, runs.ToArray());
    }

    private static void AssertSameAsAlone(DecoderModel model, TextTokenizer tokenizer, (int[] Prompt, int Tokens)[] requests, GenerationResult[] results)
    {
        using var session = new DecoderSession(model);
        var alone = new Generator(session, tokenizer);
        for (int i = 0; i < requests.Length; i++)
        {
            var expected = alone.Generate(requests[i].Prompt, Tokens(requests[i].Tokens));
            Assert.That(results[i].TokenIds, Is.EqualTo(expected.TokenIds), $"request {i} ({requests[i].Prompt.Length} prompt tokens)");
            Assert.That(results[i].TokenIds, Has.Length.EqualTo(requests[i].Tokens));
        }
    }

    [TestCase("stories260K", Lowering.Ort, 0)]
    [TestCase("stories260K", Lowering.Ort, 4)]
    [TestCase("stories260K", Lowering.Portable, 0)]
    [TestCase("synth llama-tiny", Lowering.Ort, 0)]
    [TestCase("synth llama-tiny", Lowering.Portable, 0)]
    public async Task Prompts_of_different_lengths_queued_together_generate_what_each_generates_alone(string name, Lowering lowering, int prefillChunk)
    {
        string folder = Folder(name, lowering);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        int[] lengths = [9, 14, 5, 20, 11];
        var requests = lengths.Select((length, i) => (Prompt(model.Folder, length, seed: 10 + i), Tokens: 12 + 3 * i)).ToArray();
        var (results, runs) = await RunQueued(model, tokenizer, Prompt(model.Folder, 4, seed: 1), requests, sequences: lengths.Length + 1, prefillChunk: prefillChunk);
        AssertSameAsAlone(model, tokenizer, requests, results);
        if (!model.RowsKeepOwnLengths)
        {
            Assert.That(runs.Select(r => r.Prompts), Is.All.EqualTo(1), "the shared timeline prefills one prompt per run");
            return;
        }
        var shared = runs[1];
        Assert.That(shared.Prompts, Is.EqualTo(lengths.Length), "every queued prompt in one run");
        Assert.That(shared.PromptTokens, Is.EqualTo(prefillChunk == 0 ? lengths.Sum() : lengths.Length * prefillChunk));
        Assert.That(shared.Width, Is.EqualTo(prefillChunk == 0 ? lengths.Max() : prefillChunk));
        Assert.That(runs.Sum(r => r.PromptTokens), Is.EqualTo(4 + lengths.Sum()), "each prompt token ran once");
    }

    [Test]
    public async Task A_shared_prefill_run_takes_rows_that_cache_nothing_before_finished_conversations_rows()
    {
        // Rows 0 and 1 cache two finished conversations, row 2 decodes a long request, row 3 a gate request whose
        // prefill holds the batcher until two new prompts wait together; rows 4 and 5 are empty. The new prompts'
        // shared run must take rows 4 and 5, so that both conversations' follow-ups start from their cached rows.
        string folder = Folder("stories260K", Lowering.Ort);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        int armed = 0;
        using var blocked = new ManualResetEventSlim();
        using var queued = new ManualResetEventSlim();
        var options = new BatcherOptions
        {
            MaxSequences = 6,
            PrefillObserver = _ =>
            {
                if (Interlocked.Exchange(ref armed, 0) != 1) return;
                blocked.Set();
                Assert.That(queued.Wait(TimeSpan.FromSeconds(60)), "the new prompts were queued");
            },
        };
        using var batcher = new ContinuousBatcher(model, tokenizer, options);
        int[][] first = [Prompt(model.Folder, 9, seed: 21), Prompt(model.Folder, 12, seed: 22)];
        var finished = first.Select(p => batcher.GenerateAsync(p, Tokens(3))).ToArray();
        var longRequest = batcher.GenerateAsync(Prompt(model.Folder, 6, seed: 23), Tokens(400));
        var replies = await Task.WhenAll(finished).WaitAsync(TimeSpan.FromSeconds(60));
        Interlocked.Exchange(ref armed, 1);
        var gate = batcher.GenerateAsync(Prompt(model.Folder, 7, seed: 24), Tokens(3));
        Assert.That(blocked.Wait(TimeSpan.FromSeconds(60)), "the gate request's prefill ran");
        var fresh = new[] { batcher.GenerateAsync(Prompt(model.Folder, 8, seed: 25), Tokens(3)), batcher.GenerateAsync(Prompt(model.Folder, 8, seed: 26), Tokens(3)) };
        queued.Set();
        await Task.WhenAll([gate, .. fresh]).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.That(batcher.PrefillRunRows, Is.GreaterThan(batcher.PrefillRuns), "the two new prompts shared a run");
        for (int c = 0; c < first.Length; c++)
        {
            int[] followUp = [.. first[c], .. replies[c].TokenIds, .. Prompt(model.Folder, 5, seed: 30 + c)[1..]];
            using var sequence = batcher.Submit(followUp, Tokens(3));
            await sequence.Completion.WaitAsync(TimeSpan.FromSeconds(60));
            Assert.That(sequence.CachedPromptTokens, Is.GreaterThanOrEqualTo(first[c].Length + replies[c].TokenIds.Length - 1),
                $"conversation {c}'s follow-up starts from its cached row");
        }
        await longRequest.WaitAsync(TimeSpan.FromSeconds(60));
    }

    [Test]
    public async Task A_prefill_run_holds_at_most_the_step_budget_less_the_decoding_rows_and_admits_in_order()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        const int budget = 24;
        int[] lengths = [5, 8, 30, 6];
        var requests = lengths.Select((length, i) => (Prompt(model.Folder, length, seed: 20 + i), Tokens: 40)).ToArray();
        var (results, runs) = await RunQueued(model, tokenizer, Prompt(model.Folder, 4, seed: 2), requests, sequences: 6, budget: budget);
        AssertSameAsAlone(model, tokenizer, requests, results);
        foreach (var run in runs)
            Assert.That(run.PromptTokens, Is.LessThanOrEqualTo(Math.Max(1, budget - run.DecodingRows)), $"{run}");
        // With the holding row decoding the room is 23: 5 and 8 share a run, 30 does not fit the 10 left and the
        // 6 behind it waits its turn; 30 then fills the 21 left beside three decoding rows and finishes alone.
        Assert.That(runs, Is.EqualTo(new[]
        {
            new PrefillRunInfo(1, 4, 4, 0),
            new PrefillRunInfo(2, 13, 8, 1),
            new PrefillRunInfo(1, 21, 21, 3),
            new PrefillRunInfo(1, 9, 9, 3),
            new PrefillRunInfo(1, 6, 6, 4),
        }));
    }

    [Test]
    public async Task A_prompt_that_would_make_a_run_mostly_padding_waits_for_the_next_run()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        int[] lengths = [40, 3, 3];
        var requests = lengths.Select((length, i) => (Prompt(model.Folder, length, seed: 30 + i), Tokens: 10)).ToArray();
        var (results, runs) = await RunQueued(model, tokenizer, Prompt(model.Folder, 4, seed: 3), requests, sequences: 4);
        AssertSameAsAlone(model, tokenizer, requests, results);
        // 3 beside 40 computes 80 tokens for 43 real ones (within twice): they share; a second 3 would make 120 for 46.
        Assert.That(runs.Skip(1).Select(r => (r.Prompts, r.PromptTokens)), Is.EqualTo(new[] { (2, 43), (1, 3) }));
    }

    [Test]
    public async Task With_last_token_logits_only_prompts_share_a_run_only_when_they_end_at_the_same_column()
    {
        string folder = Path.Combine(Fixtures.Root, "stories260k-ort-last-logits");
        if (!Directory.Exists(folder))
            ModelFolderWriter.Export(Exporters.Tests.Stories260K.LegacyCheckpoint, Exporters.Tests.Stories260K.Tokenizer, folder,
                new ExportOptions { Lowering = Lowering.Ort, LastTokenLogitsOnly = true });
        using var model = new DecoderModel(folder);
        Assert.That(model.FullLogits, Is.False);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        int[] lengths = [6, 6, 9, 9];
        var requests = lengths.Select((length, i) => (Prompt(model.Folder, length, seed: 40 + i), Tokens: 10)).ToArray();
        var (results, runs) = await RunQueued(model, tokenizer, Prompt(model.Folder, 4, seed: 4), requests, sequences: 5);
        AssertSameAsAlone(model, tokenizer, requests, results);
        Assert.That(runs.Skip(1).Select(r => (r.Prompts, r.PromptTokens)), Is.EqualTo(new[] { (2, 12), (2, 18) }));
    }
}
