using System.Text.Json.Nodes;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests.ChatTemplates;

/// <summary>A model folder with its own chat template gets that template's prompt; one without keeps its hand-written format.</summary>
[TestFixture]
public class ChatPromptTests
{
    /// <summary>A template that spells no special tokens, so the SentencePiece fixture encodes its text as any text.</summary>
    internal const string StoryTemplate =
        "{% for m in messages %}{% if m.role == 'system' %}[{{ m.content|trim }}]\n{% else %}{{ m.role|capitalize }}: {{ m.content }}\n{% endif %}{% endfor %}" +
        "{% if add_generation_prompt %}Assistant:{% endif %}";

    /// <summary>A copy of the stories260K folder whose tokenizer_config.json carries <paramref name="template"/>.</summary>
    internal static string FolderWithTemplate(string source, string destination, string template)
    {
        Directory.CreateDirectory(destination);
        foreach (string file in Directory.EnumerateFiles(source)) File.Copy(file, Path.Combine(destination, Path.GetFileName(file)), overwrite: true);
        string configPath = Path.Combine(destination, "tokenizer_config.json");
        var config = File.Exists(configPath) ? JsonNode.Parse(File.ReadAllText(configPath))!.AsObject() : new JsonObject();
        config["chat_template"] = template;
        File.WriteAllText(configPath, config.ToJsonString());
        return destination;
    }

    [Test]
    public void A_folder_with_a_chat_template_gets_the_templates_prompt_as_python3_jinja2_renders_it()
    {
        string stories = Fixtures.Stories(Lowering.Ort);
        string folder = FolderWithTemplate(stories, Path.Combine(Fixtures.Root, "stories-with-template"), StoryTemplate);
        var tokenizer = TextTokenizer.Load(folder, 1);
        var messages = new List<ChatMessage> { new("system", " Tell short stories. "), new("user", "Once upon a time"), new("assistant", "there was a cat."), new("user", "More") };

        var prompt = ChatPrompt.ForModel(folder, tokenizer);
        Assert.That(prompt.Template, Is.Not.Null);
        var variables = new JsonObject
        {
            ["messages"] = new JsonArray([.. messages.Select(m => (JsonNode)new JsonObject { ["role"] = m.Role, ["content"] = m.Content })]),
            ["tools"] = null, ["documents"] = null, ["add_generation_prompt"] = true,
            ["bos_token"] = prompt.Template!.BosToken, ["eos_token"] = prompt.Template.EosToken,
        };
        var reference = Jinja2Reference.Render([new TemplateCase("story", StoryTemplate, variables)])[0];
        Assert.That(reference.Error, Is.Null);
        Assert.That(prompt.Render(messages), Is.EqualTo(reference.Text));
        Assert.That(prompt.Encode(messages, tokenizer), Is.EqualTo(tokenizer.Encode(reference.Text!, addBos: false)));

        var plain = ChatPrompt.ForModel(stories, TextTokenizer.Load(stories, 1));
        Assert.That((plain.Template, plain.Format), Is.EqualTo(((Runtime.Tokenization.Jinja.ModelChatTemplate?)null, ChatFormat.Plain)),
            "a folder without a template keeps the hand-written format");
    }

    [Test]
    public void A_template_that_refuses_the_conversation_is_a_located_error()
    {
        string folder = FolderWithTemplate(Fixtures.Stories(Lowering.Ort), Path.Combine(Fixtures.Root, "stories-refusing"),
            "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}");
        var tokenizer = TextTokenizer.Load(folder, 1);
        var error = Assert.Throws<Runtime.Tokenization.Jinja.TemplateError>(() =>
            ChatPrompt.ForModel(folder, tokenizer).Encode([new("system", "x"), new("user", "y")], tokenizer))!;
        Assert.That(error.Message, Does.Contain("tokenizer_config.json chat_template' line 1 column").And.EndWith("raise_exception: System role not supported"));
    }
}
