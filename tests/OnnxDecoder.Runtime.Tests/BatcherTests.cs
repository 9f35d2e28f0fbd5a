using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>Continuous batching: every sequence decoded in a shared batch must produce what it
/// produces alone, however requests join, finish, get cancelled or outgrow the timeline.</summary>
public class BatcherTests
{
    private static readonly string[] Prompts =
    [
        "Once upon a time", "The little dog", "One day, Lily went to the park with her mom and", "Tom and his friend",
        "The sun", "A big red ball rolled down the hill and the children", "She was sad", "Every morning the cat",
    ];

    private static (ContinuousBatcher Batcher, DecoderModel Model) Open(Lowering lowering, int sequences, int? maxLength = null, int queue = 64, int prefillChunk = 0)
    {
        string folder = Fixtures.Stories(lowering);
        var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        return (new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = sequences, MaxLength = maxLength, MaxQueueLength = queue, PrefillChunk = prefillChunk }), model);
    }

    private static GenerationResult Alone(Lowering lowering, string prompt, int maxTokens, int? maxLength = null)
    {
        string folder = Fixtures.Stories(lowering);
        using var session = new DecoderSession(folder, new DecoderSessionOptions { MaxLength = maxLength });
        return new Generator(session, TextTokenizer.Load(folder, session.Folder.BosTokenId)).Generate(prompt, new GenerationOptions { MaxNewTokens = maxTokens });
    }

    [TestCase(Lowering.Ort, 0)]
    [TestCase(Lowering.Portable, 0)]
    [TestCase(Lowering.Ort, 3)]
    public async Task Sequences_that_join_and_leave_between_steps_each_generate_what_they_generate_alone(Lowering lowering, int prefillChunk)
    {
        var (batcher, model) = Open(lowering, sequences: 3, prefillChunk: prefillChunk);
        using var _ = model;
        using (batcher)
        {
            // 16 requests of different prompt and output lengths through 3 rows: rows free up and
            // refill at different steps, and longer prompts join behind shorter timelines.
            var requests = Enumerable.Range(0, 16).Select(i => (Prompt: Prompts[i % Prompts.Length], Tokens: 12 + 7 * (i % 5))).ToArray();
            var results = await Task.WhenAll(requests.Select(r =>
                batcher.GenerateAsync(batcher.Tokenizer.Encode(r.Prompt, addBos: true), new GenerationOptions { MaxNewTokens = r.Tokens })));
            for (int i = 0; i < requests.Length; i++)
            {
                var alone = Alone(lowering, requests[i].Prompt, requests[i].Tokens);
                Assert.That(results[i].TokenIds, Is.EqualTo(alone.TokenIds), $"request {i} ({requests[i].Prompt})");
                Assert.That(results[i].Text, Is.EqualTo(alone.Text));
                Assert.That(results[i].StopReason, Is.EqualTo(alone.StopReason));
            }
            Assert.That((double)batcher.RowSteps / batcher.Steps, Is.GreaterThan(2.0), "decode steps ran several rows at once");
            Assert.That(batcher.Outstanding, Is.Zero);
        }
    }

    [TestCase(Lowering.Ort)]
    [TestCase(Lowering.Portable)]
    public async Task Sequences_that_reach_the_max_length_stay_exact_whether_rows_share_a_timeline_or_not(Lowering lowering)
    {
        // 48 positions: sequences of up to 14 + 46 tokens joining at different times run the shared
        // timeline into its end many times; full contexts stop exactly as they do alone.
        const int maxLength = 48;
        var (batcher, model) = Open(lowering, sequences: 4, maxLength: maxLength);
        using var _ = model;
        using (batcher)
        {
            var requests = Enumerable.Range(0, 12).Select(i => (Prompt: Prompts[i % Prompts.Length], Tokens: 10 + 12 * (i % 4))).ToArray();
            var results = await Task.WhenAll(requests.Select(r =>
                batcher.GenerateAsync(batcher.Tokenizer.Encode(r.Prompt, addBos: true), new GenerationOptions { MaxNewTokens = r.Tokens })));
            for (int i = 0; i < requests.Length; i++)
            {
                var alone = Alone(lowering, requests[i].Prompt, requests[i].Tokens, maxLength);
                Assert.That(results[i].TokenIds, Is.EqualTo(alone.TokenIds), $"request {i}");
                Assert.That(results[i].StopReason, Is.EqualTo(alone.StopReason), $"request {i}");
            }
            Assert.That(results.Any(r => r.StopReason == StopReason.ContextFull), "some sequence filled its context");
            if (lowering == Lowering.Portable) Assert.That(batcher.Compactions, Is.GreaterThan(0), "the shared timeline was compacted");
            else Assert.That(batcher.Compactions, Is.Zero, "GQA rows keep their own lengths: nothing to compact");
            Assert.That(model.RowsKeepOwnLengths, Is.EqualTo(lowering == Lowering.Ort));
        }
    }

    [Test]
    public async Task A_prompt_that_extends_the_previous_one_reuses_its_cached_prefix_and_stays_exact()
    {
        var (batcher, model) = Open(Lowering.Ort, sequences: 2);
        using var _ = model;
        using (batcher)
        {
            // A conversation: each turn's prompt begins with the previous prompt.
            string first = "Once upon a time, there was a little girl named Lily.";
            string second = first + " She loved to play outside.";
            string third = second + " One day, she saw a big dog.";
            int Tokens(string text) => batcher.Tokenizer.Encode(text, addBos: true).Length;
            foreach (var prompt in new[] { first, second, third, third })
            {
                long before = batcher.ReusedPrefixTokens;
                var result = await batcher.GenerateAsync(batcher.Tokenizer.Encode(prompt, addBos: true), new GenerationOptions { MaxNewTokens = 24 });
                Assert.That(result.TokenIds, Is.EqualTo(Alone(Lowering.Ort, prompt, 24).TokenIds), prompt);
                long reused = batcher.ReusedPrefixTokens - before;
                if (prompt == first) Assert.That(reused, Is.Zero);
                else if (prompt == second) // the first turn's row also holds its reply, which may match the second prompt further
                    Assert.That(reused, Is.InRange(Tokens(first), Tokens(second) - 1));
                else Assert.That(reused, Is.GreaterThanOrEqualTo(Tokens(second)), "the same prompt again reuses all but its last token");
            }
        }
    }

    [Test]
    public async Task Interleaved_conversations_start_each_turn_from_their_own_cached_rows_and_stay_exact()
    {
        // 8 three-turn conversations at once on 8 rows: every follow-up prompt is the previous prompt,
        // its reply and a new user line, so the row the previous turn finished in holds all of it but
        // the reply's last token (sampled, never run). Other conversations' cached rows ride along meanwhile.
        const int conversations = 8, turns = 3;
        string[] followUps = [" What happened next?", " Then what did they do?"];
        var (batcher, model) = Open(Lowering.Ort, sequences: conversations);
        using var _ = model;
        var transcripts = new List<(int[] Prompt, GenerationResult Result, int Cached)>[conversations];
        using (batcher)
        {
            await Task.WhenAll(Enumerable.Range(0, conversations).Select(c => Task.Run(async () =>
            {
                transcripts[c] = [];
                int[] prompt = batcher.Tokenizer.Encode(Prompts[c], addBos: true);
                for (int turn = 0; turn < turns; turn++)
                {
                    using var sequence = batcher.Submit(prompt, new GenerationOptions { MaxNewTokens = 8 + 3 * ((c + turn) % 4) });
                    var result = await sequence.Completion.WaitAsync(TimeSpan.FromSeconds(60));
                    transcripts[c].Add((prompt, result, sequence.CachedPromptTokens));
                    if (turn + 1 < turns) prompt = [.. prompt, .. result.TokenIds, .. batcher.Tokenizer.Encode(followUps[turn], addBos: false)];
                }
            })));
            Assert.That(batcher.CachedRows, Is.EqualTo(conversations), "every finished conversation still caches its row");
        }
        long reusedTotal = 0;
        string folder = Fixtures.Stories(Lowering.Ort);
        using var fresh = new DecoderSession(folder);
        var generator = new Generator(fresh, TextTokenizer.Load(folder, fresh.Folder.BosTokenId));
        for (int c = 0; c < conversations; c++)
            for (int turn = 0; turn < turns; turn++)
            {
                var (prompt, result, cached) = transcripts[c][turn];
                reusedTotal += cached;
                fresh.Reset();
                var alone = generator.Generate(prompt, new GenerationOptions { MaxNewTokens = result.TokenIds.Length });
                Assert.That(result.TokenIds, Is.EqualTo(alone.TokenIds), $"conversation {c}, turn {turn}: the same tokens as a fresh run");
                if (turn == 0) continue;
                var (previousPrompt, previous, _) = transcripts[c][turn - 1];
                Assert.That(cached, Is.GreaterThanOrEqualTo(previousPrompt.Length + previous.TokenIds.Length - 1),
                    $"conversation {c}, turn {turn}: starts from its previous prompt and reply");
                Assert.That(cached, Is.LessThan(prompt.Length), "at least one prompt token runs, for its logits");
            }
        TestContext.Progress.WriteLine($"prefix cache: {reusedTotal} of {transcripts.Sum(t => t.Sum(x => x.Prompt.Length))} prompt tokens reused over {conversations} x {turns} turns");
    }

    [Test]
    public async Task A_new_request_evicts_the_least_recently_used_cached_row_and_outputs_stay_exact()
    {
        // Two rows, three conversations one after another: the third takes the row of the first (finished
        // longest ago); the second's follow-up still starts from its own row, the first's runs again.
        var (batcher, model) = Open(Lowering.Ort, sequences: 2);
        using var _ = model;
        string folder = Fixtures.Stories(Lowering.Ort);
        using var fresh = new DecoderSession(folder);
        var generator = new Generator(fresh, TextTokenizer.Load(folder, fresh.Folder.BosTokenId));
        using (batcher)
        {
            async Task<(int[] Prompt, int[] Reply, int Cached)> Turn(int[] prompt)
            {
                using var sequence = batcher.Submit(prompt, new GenerationOptions { MaxNewTokens = 12 });
                var result = await sequence.Completion.WaitAsync(TimeSpan.FromSeconds(60));
                fresh.Reset();
                Assert.That(result.TokenIds, Is.EqualTo(generator.Generate(prompt, new GenerationOptions { MaxNewTokens = 12 }).TokenIds), "the same tokens as a fresh run");
                return (prompt, result.TokenIds, sequence.CachedPromptTokens);
            }
            int[] FollowUp((int[] Prompt, int[] Reply, int) turn) => [.. turn.Prompt, .. turn.Reply, .. batcher.Tokenizer.Encode(" The end.", addBos: false)];
            var a = await Turn(batcher.Tokenizer.Encode(Prompts[0], addBos: true));
            var b = await Turn(batcher.Tokenizer.Encode(Prompts[1], addBos: true));
            var c = await Turn(batcher.Tokenizer.Encode(Prompts[2], addBos: true));
            Assert.That(batcher.CachedRows, Is.EqualTo(2));
            var b2 = await Turn(FollowUp(b));
            Assert.That(b2.Cached, Is.GreaterThanOrEqualTo(b.Prompt.Length + b.Reply.Length - 1), "the second conversation's row was kept");
            var a2 = await Turn(FollowUp(a));
            Assert.That(a2.Cached, Is.LessThan(a.Prompt.Length - 1), "the first conversation's row was evicted for the third");
            Assert.That(c.Cached, Is.LessThanOrEqualTo(1), "a new conversation shares at most BOS");
        }
    }

    [Test]
    public async Task Cancelling_a_sequence_frees_its_row_for_the_next_request()
    {
        var (batcher, model) = Open(Lowering.Ort, sequences: 1, queue: 4);
        using var _ = model;
        using (batcher)
        {
            using var cancel = new CancellationTokenSource();
            var prompt = batcher.Tokenizer.Encode("Once upon a time", addBos: true);
            var holding = batcher.Submit(prompt, new GenerationOptions { MaxNewTokens = 10_000 }, cancel.Token);
            var queued = batcher.Submit(batcher.Tokenizer.Encode("The little dog", addBos: true), new GenerationOptions { MaxNewTokens = 20 });
            Assert.That(await holding.Tokens.ReadAsync(), Is.Not.Null);
            Assert.That(queued.Completion.IsCompleted, Is.False, "the only row is taken");
            cancel.Cancel();
            Assert.That(async () => await holding.Completion, Throws.InstanceOf<OperationCanceledException>());
            var next = await queued.Completion.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.That(next.TokenIds, Is.EqualTo(Alone(Lowering.Ort, "The little dog", 20).TokenIds));

            // Disposing an unfinished sequence (a client that went away) cancels it too.
            var abandoned = batcher.Submit(prompt, new GenerationOptions { MaxNewTokens = 10_000 });
            await abandoned.Tokens.ReadAsync();
            abandoned.Dispose();
            Assert.That(async () => await abandoned.Completion, Throws.InstanceOf<OperationCanceledException>());
            var after = await batcher.GenerateAsync(prompt, new GenerationOptions { MaxNewTokens = 15 }).WaitAsync(TimeSpan.FromSeconds(30));
            Assert.That(after.TokenIds, Is.EqualTo(Alone(Lowering.Ort, "Once upon a time", 15).TokenIds));
            Assert.That(batcher.Outstanding, Is.Zero);
        }
    }

    [Test]
    public async Task A_full_queue_refuses_and_bad_requests_fail_before_queueing()
    {
        var (batcher, model) = Open(Lowering.Ort, sequences: 1, maxLength: 64, queue: 1);
        using var _ = model;
        using (batcher)
        {
            var prompt = batcher.Tokenizer.Encode("Once upon a time", addBos: true);
            using var first = batcher.Submit(prompt, new GenerationOptions { MaxNewTokens = 10_000 });
            using var second = batcher.Submit(prompt, new GenerationOptions { MaxNewTokens = 5 });
            Assert.That(() => batcher.Submit(prompt, new GenerationOptions { MaxNewTokens = 5 }),
                Throws.TypeOf<QueueFullException>().With.Message.EqualTo("all 1 sequences are busy and 1 requests already wait (limit 1): retry later"));
            Assert.That(() => batcher.Submit(Enumerable.Repeat(1, 65).ToArray(), new GenerationOptions()),
                Throws.TypeOf<ContextFullException>().With.Message.Contains("the prompt needs 65 positions but the max length is 64"));
            Assert.That(() => batcher.Submit([1, 100_000], new GenerationOptions()), Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("token id 100000 is outside the vocabulary"));
            Assert.That(() => batcher.Submit(prompt, new GenerationOptions { MaxNewTokens = 0 }), Throws.TypeOf<ArgumentOutOfRangeException>());
            Assert.That(() => batcher.Submit([], new GenerationOptions()), Throws.ArgumentException.With.Message.Contains("the prompt is empty"));
            first.Cancel();
            Assert.That((await second.Completion.WaitAsync(TimeSpan.FromSeconds(30))).TokenIds, Has.Length.EqualTo(5));
        }
    }

    [Test]
    public async Task Streaming_through_the_batch_concatenates_to_the_result_and_stop_strings_hold()
    {
        var (batcher, model) = Open(Lowering.Ort, sequences: 2);
        using var _ = model;
        using (batcher)
        {
            var prompt = batcher.Tokenizer.Encode("Once upon a time", addBos: true);
            var options = new GenerationOptions { MaxNewTokens = 100, StopStrings = ["Lily."] };
            var text = new System.Text.StringBuilder();
            GenerationResult? result = null;
            await foreach (var piece in batcher.StreamAsync(prompt, options, r => result = r)) text.Append(piece.Text);
            var alone = Alone(Lowering.Ort, "Once upon a time", 100);
            Assert.That(result!.StopReason, Is.EqualTo(StopReason.StopString));
            Assert.That(text.ToString(), Is.EqualTo(result.Text));
            Assert.That(alone.Text, Does.StartWith(result.Text + "Lily."));
        }
    }

    [Test]
    public async Task Disposing_the_batcher_fails_what_is_still_running_and_releases_every_value()
    {
        long live = OrtValueLedger.Live;
        var (batcher, model) = Open(Lowering.Portable, sequences: 2);
        var prompt = batcher.Tokenizer.Encode("Once upon a time", addBos: true);
        var running = batcher.Submit(prompt, new GenerationOptions { MaxNewTokens = 10_000 });
        await running.Tokens.ReadAsync();
        batcher.Dispose();
        model.Dispose();
        Assert.That(async () => await running.Completion, Throws.TypeOf<ObjectDisposedException>());
        Assert.That(() => batcher.Submit(prompt, new GenerationOptions()), Throws.TypeOf<ObjectDisposedException>());
        Assert.That(OrtValueLedger.Live, Is.EqualTo(live));
    }
}
