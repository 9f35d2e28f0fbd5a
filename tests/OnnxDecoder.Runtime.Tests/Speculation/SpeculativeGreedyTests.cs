using OnnxDecoder.Exporters;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Speculation;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests.Speculation;

/// <summary>Greedy speculative decoding must give plain greedy decoding's output token for token,
/// whatever the drafter proposes; rejected drafts must leave no trace in the cache.</summary>
[Parallelizable(ParallelScope.None)]
public class SpeculativeGreedyTests
{
    private static readonly string[] StoryPrompts =
    [
        "Once upon a time, there was a little girl named Lily. She loved to play outside. Once upon a time, there was a little girl",
        "Tom had a red ball. He liked to",
        "The sun was hot. The sun was hot. The sun",
    ];

    /// <summary>A second synth llama-tiny (another seed): the same tokenizer, different weights, so it drafts badly.</summary>
    private static string SynthDraft() => Fixtures.SynthExport("llama-tiny", seed: 11);

    private static Generator Open(string folder, out DecoderSession session)
    {
        session = new DecoderSession(folder);
        return new Generator(session, TextTokenizer.Load(folder, session.Folder.BosTokenId));
    }

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (int k in new[] { 1, 3, 5 })
        {
            yield return new TestCaseData("stories", "ngram", k).SetName($"Stories260K_ngram_k{k}");
            yield return new TestCaseData("stories", "draft", k).SetName($"Stories260K_fp16_draft_k{k}");
            yield return new TestCaseData("synth", "ngram", k).SetName($"Synth_llama_tiny_ngram_k{k}");
            yield return new TestCaseData("synth", "draft", k).SetName($"Synth_llama_tiny_other_seed_draft_k{k}");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void Greedy_output_is_identical_to_plain_greedy(string model, string drafterKind, int k)
    {
        string folder = model == "stories" ? Fixtures.Stories(Lowering.Ort) : Fixtures.SynthLlamaTiny();
        string[] prompts = model == "stories" ? StoryPrompts : ["hello hello hello world", "abc abc abc", "the cat sat on the mat and the cat"];
        var generator = Open(folder, out var session);
        using var _ = session;
        using var draft = drafterKind == "draft" ? new DraftModelDrafter(model == "stories" ? Fixtures.Stories(Lowering.Ort, float16: true) : SynthDraft()) : null;
        IDrafter drafter = draft is not null ? draft : new PromptLookupDrafter(minNgram: 1, maxNgram: 3);
        int drafted = 0, accepted = 0;
        foreach (var prompt in prompts)
        {
            var plain = generator.Generate(prompt, new GenerationOptions { MaxNewTokens = 48 });
            var fast = generator.Generate(prompt, new GenerationOptions { MaxNewTokens = 48, Speculation = new SpeculationOptions { Drafter = drafter, DraftTokens = k, MissesBeforePause = 1000 } });
            Assert.That(fast.TokenIds, Is.EqualTo(plain.TokenIds), $"prompt '{prompt}'");
            Assert.That(fast.Text, Is.EqualTo(plain.Text));
            Assert.That(fast.StopReason, Is.EqualTo(plain.StopReason));
            Assert.That(plain.Speculation, Is.Null);
            drafted += fast.Speculation!.Drafted;
            accepted += fast.Speculation.Accepted;
        }
        Assert.That(drafted, Is.GreaterThan(0), "the drafter proposed nothing: the test would not exercise verification");
        if (model == "stories") Assert.That(accepted, Is.GreaterThan(0), "no draft accepted: rollback-free paths untested");
        Assert.That(accepted, Is.LessThan(drafted), "every draft accepted: rollback untested");
    }

    [Test]
    public void Stop_strings_and_a_continued_conversation_match_plain_decoding()
    {
        var generator = Open(Fixtures.Stories(Lowering.Ort), out var session);
        using var _ = session;
        var speculation = new SpeculationOptions { Drafter = new PromptLookupDrafter(1, 3), DraftTokens = 4 };
        var tokenizer = generator.Tokenizer!;
        foreach (var stop in new[] { "girl", ".", "Lily" })
        {
            var plain = generator.Generate(StoryPrompts[0], new GenerationOptions { MaxNewTokens = 60, StopStrings = [stop] });
            var plainNext = generator.Continue(tokenizer.Encode(" Then", addBos: false), new GenerationOptions { MaxNewTokens = 30 });
            var fast = generator.Generate(StoryPrompts[0], new GenerationOptions { MaxNewTokens = 60, StopStrings = [stop], Speculation = speculation });
            var fastNext = generator.Continue(tokenizer.Encode(" Then", addBos: false), new GenerationOptions { MaxNewTokens = 30, Speculation = speculation });
            Assert.That(fast.Text, Is.EqualTo(plain.Text), stop);
            Assert.That(fast.StopReason, Is.EqualTo(plain.StopReason));
            Assert.That(fast.TokenIds, Is.EqualTo(plain.TokenIds));
            // The cache after a speculative turn must hold exactly the accepted tokens, or the next turn diverges.
            Assert.That(fastNext.TokenIds, Is.EqualTo(plainNext.TokenIds), $"the turn after stopping at '{stop}'");
        }
    }

    [Test]
    public void Max_tokens_and_a_full_context_stop_as_plain_decoding_does()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        using var session = new DecoderSession(folder, new DecoderSessionOptions { MaxLength = 64 });
        var generator = new Generator(session, TextTokenizer.Load(folder, session.Folder.BosTokenId));
        foreach (int max in new[] { 1, 2, 7, 200 })
        {
            var plain = generator.Generate(StoryPrompts[0], new GenerationOptions { MaxNewTokens = max });
            var fast = generator.Generate(StoryPrompts[0], new GenerationOptions { MaxNewTokens = max, Speculation = new SpeculationOptions { Drafter = new PromptLookupDrafter(1, 3), DraftTokens = 5 } });
            Assert.That(fast.TokenIds, Is.EqualTo(plain.TokenIds), $"max {max}");
            Assert.That(fast.StopReason, Is.EqualTo(plain.StopReason), $"max {max}");
        }
    }

    [Test]
    public void A_constraint_decodes_without_speculation_and_gives_the_same_output()
    {
        var generator = Open(Fixtures.Stories(Lowering.Ort), out var session);
        using var _ = session;
        var constraint = new GrammarConstraint(RegexGrammar.Compile("[a-z ]{3,20}\\."));
        var plain = generator.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 30, Constraint = constraint });
        var fast = generator.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 30, Constraint = constraint, Speculation = new SpeculationOptions { Drafter = new PromptLookupDrafter(1, 3) } });
        Assert.That(fast.Text, Is.EqualTo(plain.Text));
        Assert.That(fast.Text, Does.Match("^[a-z ]{3,20}\\.$"));
        Assert.That(fast.Speculation, Is.Null, "constrained decoding runs one token per step");
    }

    [Test]
    public void A_graph_whose_cache_cannot_roll_back_is_refused_with_the_reason()
    {
        var generator = Open(Fixtures.Stories(Lowering.Portable), out var session);
        using var _ = session;
        var e = Assert.Throws<NotSupportedException>(() => generator.Generate("Once", new GenerationOptions { Speculation = new SpeculationOptions { Drafter = new PromptLookupDrafter() } }));
        Assert.That(e!.Message, Does.Contain("cannot roll back").And.Contain("--lowering ort").And.Contain(session.Folder.Directory));
        var d = Assert.Throws<NotSupportedException>(() => new DraftModelDrafter(Fixtures.Stories(Lowering.Portable)));
        Assert.That(d!.Message, Does.Contain("draft model"));
    }

    [Test]
    public void A_draft_model_with_another_vocabulary_is_refused_naming_both_folders()
    {
        var generator = Open(Fixtures.Stories(Lowering.Ort), out var session);
        using var _ = session;
        using var draft = new DraftModelDrafter(Fixtures.SynthLlamaTiny());
        var e = Assert.Throws<ArgumentException>(() => generator.Generate("Once", new GenerationOptions { Speculation = new SpeculationOptions { Drafter = draft } }));
        Assert.That(e!.Message, Does.Contain(Fixtures.SynthLlamaTiny()).And.Contain(Fixtures.Stories(Lowering.Ort)));
    }
}
