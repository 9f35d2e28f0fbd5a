using System.Text.Json.Nodes;
using OnnxDecoder.Runtime.Tokenization.Jinja;
using OnnxDecoder.Runtime.Tools;

namespace OnnxDecoder.Runtime.Tokenization;

/// <summary>
/// How a model folder's conversations become prompt ids: the folder's own Jinja chat template when it has one
/// (rendered as transformers does, with its bos/eos tokens and add_generation_prompt, then encoded so that the
/// special tokens the text spells become their ids), else the hand-written <see cref="ChatFormat"/> the folder's
/// markers or vocabulary point to (llama2.c and synth folders have no template).
/// </summary>
public sealed class ChatPrompt
{
    private ChatPrompt(ModelChatTemplate? template, ChatFormat format)
    {
        Template = template;
        Format = format;
    }

    /// <summary>The folder's template; null when the hand-written <see cref="Format"/> is used.</summary>
    public ModelChatTemplate? Template { get; }

    /// <summary>The hand-written format used when there is no template.</summary>
    public ChatFormat Format { get; }

    /// <summary>What builds the prompt, for logs: "chat template" or the format's name.</summary>
    public string Description => Template is not null ? "the model's chat template" : Format.ToString();

    /// <exception cref="TemplateError">The folder's template is not Jinja this engine runs (the message names the file and construct).</exception>
    public static ChatPrompt ForModel(string folder, TextTokenizer tokenizer)
    {
        var template = ModelChatTemplate.TryLoad(folder);
        return new ChatPrompt(template, template is null ? ChatTemplate.Detect(folder, tokenizer) : ChatFormat.Plain);
    }

    /// <summary>The prompt text (special tokens spelled out).</summary>
    /// <exception cref="TemplateError">The template refuses the conversation (raise_exception) or fails.</exception>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true)
    {
        if (Template is null) return ChatTemplate.Render(Format, messages, addGenerationPrompt);
        var json = new JsonArray([.. messages.Select(m => (JsonNode)new JsonObject { ["role"] = m.Role, ["content"] = m.Content })]);
        return Template.Render(json, tools: null, addGenerationPrompt);
    }

    /// <summary>Prompt ids. The template's text carries its own BOS (bos_token) where the template puts it, so none is added.</summary>
    public int[] Encode(IReadOnlyList<ChatMessage> messages, TextTokenizer tokenizer, bool addGenerationPrompt = true) =>
        Template is null
            ? ChatTemplate.Encode(Format, messages, tokenizer, addGenerationPrompt)
            : tokenizer.Encode(Render(messages, addGenerationPrompt), addBos: false);

    /// <summary>The template renders tools itself (it reads the tools variable); else they are folded into plain messages.</summary>
    public bool TemplateRendersTools => Template?.Select(withTools: true).Source.Contains("tools", StringComparison.Ordinal) == true;

    /// <summary>How this model writes tool calls: its template's syntax, or the generic JSON form the folded prompt asks for.</summary>
    public ToolCallSyntax ToolSyntax => TemplateRendersTools ? ToolCallSyntax.Detect(Template!.Select(withTools: true).Source) : ToolCallSyntax.GenericJson;

    /// <summary>
    /// The prompt text for OpenAI-shaped messages (role, content, tool_calls, tool_call_id) and tools: through the
    /// template when it renders tools, else with tools and tool turns folded into plain messages (<see cref="ToolPrompt"/>).
    /// </summary>
    /// <exception cref="TemplateError">The template refuses the conversation (raise_exception) or fails.</exception>
    public string Render(JsonArray messages, JsonArray? tools, bool parallelToolCalls, bool addGenerationPrompt = true)
    {
        if (TemplateRendersTools) return Template!.Render(messages, tools is { Count: > 0 } ? tools : null, addGenerationPrompt);
        var folded = ToolPrompt.Fold(messages, tools, parallelToolCalls);
        if (Template is not null) return Template.Render(folded, tools: null, addGenerationPrompt);
        return ChatTemplate.Render(Format, Plain(folded), addGenerationPrompt);
    }

    /// <summary>Prompt ids for OpenAI-shaped messages and tools (see <see cref="Render(JsonArray, JsonArray?, bool, bool)"/>).</summary>
    public int[] Encode(JsonArray messages, JsonArray? tools, bool parallelToolCalls, TextTokenizer tokenizer, bool addGenerationPrompt = true)
    {
        if (Template is not null) return tokenizer.Encode(Render(messages, tools, parallelToolCalls, addGenerationPrompt), addBos: false);
        return ChatTemplate.Encode(Format, Plain(ToolPrompt.Fold(messages, tools, parallelToolCalls)), tokenizer, addGenerationPrompt);
    }

    private static List<ChatMessage> Plain(JsonArray folded) =>
        [.. folded.Select(m => new ChatMessage((string?)m!["role"] ?? "user", (string?)m["content"] ?? ""))];
}
