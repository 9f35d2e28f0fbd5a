using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxDecoder.Runtime.Tokenization.Jinja;

namespace OnnxDecoder.Cli;

/// <summary>
/// `template`: renders a chat template as transformers' apply_chat_template(tokenize=False) does and prints the
/// prompt and nothing else (no newline is added), so scripts can compare it byte for byte.
/// </summary>
internal static class TemplateCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "folder with tokenizer_config.json (chat_template, bos_token, eos_token) or chat_template.jinja" };
        var templateFile = new Option<string?>("--template") { Description = "a Jinja chat template file (variables such as bos_token come from --var)" };
        var messagesFile = new Option<string?>("--messages") { Description = "JSON array of messages in the OpenAI shape (default: [])" };
        var toolsFile = new Option<string?>("--tools") { Description = "JSON array of tools in the OpenAI shape" };
        var generationPrompt = new Option<bool>("--add-generation-prompt") { Description = "end with the assistant turn's opening" };
        var vars = new Option<string[]>("--var") { Description = "NAME=JSON, a template variable (--var enable_thinking=false, --var bos_token='\"<s>\"')", AllowMultipleArgumentsPerToken = false };
        var command = new Command("template", "Render a chat template for a conversation and print the prompt")
            { model, templateFile, messagesFile, toolsFile, generationPrompt, vars };
        command.SetAction(r => Commands.Guard(() =>
        {
            string? modelDir = r.GetValue(model), templatePath = r.GetValue(templateFile);
            if ((modelDir is null) == (templatePath is null)) throw new ArgumentException("give exactly one of --model DIR or --template FILE");
            var messages = ReadArray(r.GetValue(messagesFile), "--messages") ?? [];
            var tools = ReadArray(r.GetValue(toolsFile), "--tools");
            var extra = ParseVars(r.GetValue(vars) ?? []);
            string prompt;
            if (modelDir is not null)
            {
                if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"--model {modelDir}: no such folder");
                var template = ModelChatTemplate.TryLoad(modelDir)
                    ?? throw new InvalidDataException($"{modelDir}: no chat_template in tokenizer_config.json and no chat_template.jinja; pass --template FILE");
                prompt = template.Render(messages, tools, r.GetValue(generationPrompt), extra);
            }
            else
            {
                if (!File.Exists(templatePath)) throw new FileNotFoundException($"--template {templatePath}: no such file");
                var compiled = ChatTemplateEngine.Compile(File.ReadAllText(templatePath!), templatePath!);
                var variables = new Dictionary<string, JsonNode?>(StringComparer.Ordinal)
                {
                    ["messages"] = messages,
                    ["tools"] = tools,
                    ["documents"] = null,
                    ["add_generation_prompt"] = r.GetValue(generationPrompt),
                };
                foreach (var (name, value) in extra) variables[name] = value;
                prompt = compiled.Render(variables);
            }
            var stdout = Console.OpenStandardOutput();
            var bytes = new System.Text.UTF8Encoding(false).GetBytes(prompt);
            stdout.Write(bytes);
            stdout.Flush();
            return 0;
        }));
        return command;
    }

    private static JsonArray? ReadArray(string? path, string flag)
    {
        if (path is null) return null;
        if (!File.Exists(path)) throw new FileNotFoundException($"{flag} {path}: no such file");
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonArray ?? throw new InvalidDataException($"{flag} {path}: expected a JSON array");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{flag} {path}: not valid JSON ({e.Message})");
        }
    }

    private static Dictionary<string, JsonNode?> ParseVars(string[] assignments)
    {
        var result = new Dictionary<string, JsonNode?>(StringComparer.Ordinal);
        foreach (string assignment in assignments)
        {
            int equals = assignment.IndexOf('=');
            if (equals <= 0) throw new ArgumentException($"--var {assignment}: expected NAME=JSON, such as --var enable_thinking=false");
            string name = assignment[..equals], json = assignment[(equals + 1)..];
            try
            {
                result[name] = JsonNode.Parse(json);
            }
            catch (JsonException)
            {
                throw new ArgumentException($"--var {name}: '{json}' is not JSON; quote text as JSON, such as --var {name}='\"text\"'");
            }
        }
        return result;
    }
}
