using OnnxDecoder.Tests.Shared;
using OnnxDecoder.Exporters.Tests;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests;

[Parallelizable(ParallelScope.None)]
public class GenerationTests
{
    private static (DecoderSession Session, Generator Generator) Open(Lowering lowering, int batch = 1)
    {
        string folder = Fixtures.Stories(lowering);
        var session = new DecoderSession(folder, new DecoderSessionOptions { BatchSize = batch });
        return (session, new Generator(session, TextTokenizer.Load(folder, session.Folder.BosTokenId)));
    }

    [Test]
    public void Same_seed_same_tokens_and_another_seed_differs()
    {
        var (session, generator) = Open(Lowering.Ort);
        using (session)
        {
            GenerationOptions Options(int seed) => new() { MaxNewTokens = 40, Sampling = new SamplingOptions { Temperature = 1.0f, TopP = 0.95f, Seed = seed } };
            var a = generator.Generate("Once upon a time", Options(7)).TokenIds;
            var b = generator.Generate("Once upon a time", Options(7)).TokenIds;
            var c = generator.Generate("Once upon a time", Options(8)).TokenIds;
            Assert.That(b, Is.EqualTo(a));
            Assert.That(c, Is.Not.EqualTo(a));
        }
    }

    [Test]
    public void Top_k_one_equals_greedy_at_any_temperature()
    {
        var (session, generator) = Open(Lowering.Ort);
        using (session)
        {
            var greedy = generator.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 60 }).TokenIds;
            var topK = generator.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 60, Sampling = new SamplingOptions { Temperature = 1.7f, TopK = 1, Seed = 3 } }).TokenIds;
            Assert.That(topK, Is.EqualTo(greedy));
            Assert.That(greedy, Is.EqualTo(Stories260K.Golden().GeneratedIds.Take(60)));
        }
    }

    [Test]
    public void Sampler_cuts_by_top_k_top_p_and_min_p()
    {
        float[] logits = [MathF.Log(0.5f), MathF.Log(0.3f), MathF.Log(0.15f), MathF.Log(0.05f)];
        HashSet<int> Draws(SamplingOptions options)
        {
            var sampler = new Sampler(options with { Seed = 1 }, logits.Length);
            return Enumerable.Range(0, 2000).Select(_ => sampler.Next(logits)).ToHashSet();
        }
        Assert.That(Draws(new SamplingOptions { Temperature = 1 }), Is.EquivalentTo(new[] { 0, 1, 2, 3 }));
        Assert.That(Draws(new SamplingOptions { Temperature = 1, TopK = 2 }), Is.EquivalentTo(new[] { 0, 1 }));
        Assert.That(Draws(new SamplingOptions { Temperature = 1, TopP = 0.8f }), Is.EquivalentTo(new[] { 0, 1 }), "0.5 + 0.3 reaches 0.8");
        Assert.That(Draws(new SamplingOptions { Temperature = 1, MinP = 0.2f }), Is.EquivalentTo(new[] { 0, 1, 2 }), "0.05 < 0.2 x 0.5");
        var penalised = new Sampler(new SamplingOptions { RepetitionPenalty = 100f }, logits.Length);
        Assert.That(penalised.Next([2f, 1f, 0f, -1f], [0]), Is.EqualTo(1), "the repeated top token is divided by the penalty");
        Assert.That(() => new SamplingOptions { TopP = 1.5f }.Validate(), Throws.TypeOf<ArgumentOutOfRangeException>());
        Assert.That(() => new SamplingOptions { Temperature = -1 }.Validate(), Throws.TypeOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void Cancelling_stops_within_one_step_and_the_session_stays_usable()
    {
        var (session, generator) = Open(Lowering.Ort);
        using (session)
        {
            using var cancel = new CancellationTokenSource();
            int produced = 0;
            Assert.That(() => generator.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 300 }, _ =>
            {
                if (++produced == 10) cancel.Cancel();
            }, cancel.Token), Throws.InstanceOf<OperationCanceledException>());
            Assert.That(produced, Is.EqualTo(10), "no token is produced after the cancel");

            var again = generator.Generate(Stories260K.Golden().PromptIds, new GenerationOptions { MaxNewTokens = 100 });
            Assert.That(again.TokenIds, Is.EqualTo(Stories260K.Golden().GeneratedIds.Take(100)));
        }
    }

    [Test]
    public async Task Streaming_yields_tokens_as_they_come_and_cancellation_ends_the_stream()
    {
        var (session, generator) = Open(Lowering.Ort);
        using (session)
        {
            var tokens = new List<int>();
            await foreach (var token in generator.StreamAsync("Once upon a time", new GenerationOptions { MaxNewTokens = 30 }))
                tokens.Add(token.TokenId);
            Assert.That(tokens, Is.EqualTo(Stories260K.Golden().GeneratedIds.Take(30)));

            using var cancel = new CancellationTokenSource();
            int seen = 0;
            Assert.That(async () =>
            {
                await foreach (var _ in generator.StreamAsync("Once upon a time", new GenerationOptions { MaxNewTokens = 300 }, cancel.Token))
                    if (++seen == 5) cancel.Cancel();
            }, Throws.InstanceOf<OperationCanceledException>());
            Assert.That(seen, Is.LessThanOrEqualTo(6));
        }
    }

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void Each_row_of_a_left_padded_batch_generates_what_it_generates_alone(Lowering lowering)
    {
        string folder = Fixtures.Stories(lowering);
        var tokenizer = TextTokenizer.Load(folder, 1);
        int[][] prompts = [tokenizer.Encode("Once upon a time", true), tokenizer.Encode("The little dog was very happy because", true)];
        var options = new GenerationOptions { MaxNewTokens = 40 };
        int[][] alone;
        using (var single = new DecoderSession(folder))
            alone = prompts.Select(p => new Generator(single, tokenizer).Generate(p, options).TokenIds).ToArray();
        using var batch = new DecoderSession(folder, new DecoderSessionOptions { BatchSize = 2 });
        var together = new BatchGenerator(batch).Generate(prompts, options);
        Assert.That(together[0], Is.EqualTo(alone[0]));
        Assert.That(together[1], Is.EqualTo(alone[1]));
    }

    [TestCase(Lowering.Portable)]
    [TestCase(Lowering.Ort)]
    public void Continuing_a_conversation_reuses_the_cache_and_equals_a_fresh_run(Lowering lowering)
    {
        string folder = Fixtures.Stories(lowering);
        var tokenizer = TextTokenizer.Load(folder, 1);
        using var session = new DecoderSession(folder);
        var generator = new Generator(session, tokenizer);
        var first = generator.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 20 });
        int cachedBefore = session.Length;
        var followUp = tokenizer.Encode(" Then the dog", addBos: false);
        var second = generator.Continue(followUp, new GenerationOptions { MaxNewTokens = 20 });
        Assert.That(session.Length, Is.GreaterThan(cachedBefore), "the second turn appended to the cached sequence");

        // A fresh run over the whole conversation so far predicts the same continuation.
        var whole = first.PromptTokenIds.Concat(first.TokenIds).Concat(followUp).ToArray();
        using var fresh = new DecoderSession(folder);
        var expected = new Generator(fresh, tokenizer).Generate(whole, new GenerationOptions { MaxNewTokens = 20 });
        Assert.That(second.TokenIds, Is.EqualTo(expected.TokenIds));
    }

    [Test]
    public void Stop_strings_cut_the_text_and_report_the_reason()
    {
        var (session, generator) = Open(Lowering.Ort);
        using (session)
        {
            var streamed = new System.Text.StringBuilder();
            var result = generator.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 100, StopStrings = ["Lily."] }, t => streamed.Append(t.Text));
            Assert.That(result.StopReason, Is.EqualTo(StopReason.StopString));
            Assert.That(result.Text, Is.EqualTo(", there was a little girl named "));
            Assert.That(streamed.ToString(), Is.EqualTo(result.Text), "streamed pieces never show the stop string");

            var plain = new System.Text.StringBuilder();
            var whole = generator.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 60 }, t => plain.Append(t.Text));
            Assert.That(plain.ToString(), Is.EqualTo(whole.Text), "without a stop string the stream is the whole text");
        }
    }

    [Test]
    public void Generation_stops_when_the_context_is_full()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        using var session = new DecoderSession(folder, new DecoderSessionOptions { MaxLength = 32 });
        var result = new Generator(session, TextTokenizer.Load(folder, 1)).Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 100 });
        Assert.That(result.StopReason, Is.EqualTo(StopReason.ContextFull));
        Assert.That(result.TokenIds, Has.Length.EqualTo(32 - 5 + 1), "27 decode steps fill the cache; the last sampled token needs no slot");
    }

    [Test]
    public void Generate_json_on_the_command_line_gives_the_golden_sequence_for_both_lowerings()
    {
        var (promptIds, golden) = Stories260K.Golden();
        foreach (var lowering in new[] { Lowering.Portable, Lowering.Ort })
        {
            var (exitCode, stdout, stderr) = OnnxDecoderCli.Run("generate", "--model", Fixtures.Stories(lowering),
                "--prompt", "Once upon a time", "--temperature", "0", "--format", "json", "--max-tokens", (201 - promptIds.Length).ToString());
            Assert.That(exitCode, Is.Zero, stderr);
            using var json = System.Text.Json.JsonDocument.Parse(stdout);
            var root = json.RootElement;
            Assert.That(root.GetProperty("prompt_token_ids").EnumerateArray().Select(e => e.GetInt32()), Is.EqualTo(promptIds));
            Assert.That(root.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()), Is.EqualTo(golden.Take(196)), lowering.ToString());
            Assert.That(root.GetProperty("stop_reason").GetString(), Is.EqualTo("max_tokens"));
            Assert.That("Once upon a time" + root.GetProperty("text").GetString(), Is.EqualTo(Stories260K.GoldenText));
            Assert.That(root.GetProperty("timings").GetProperty("decode_tokens_per_s").GetDouble(), Is.GreaterThan(0));
        }
    }
}
