using System.Text.Json;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Exporters.Tests;

/// <summary>The real stories260K checkpoint and its published outputs, from ../shared/models.</summary>
public static class Stories260K
{
    public static string LegacyCheckpoint => TestPaths.SharedFile("models", "stories260K", "stories260K.bin");
    public static string Version1Checkpoint => TestPaths.SharedFile("models", "stories260K", "stories260K_v1.bin");
    public static string Tokenizer => TestPaths.SharedFile("models", "stories260K", "tok512.bin");

    /// <summary>llama2.c's greedy run of "Once upon a time": prompt ids (BOS first) and the generated ids.</summary>
    public static (int[] PromptIds, int[] GeneratedIds) Golden()
    {
        using var document = JsonDocument.Parse(File.ReadAllText(TestPaths.SharedFile("models", "stories260K", "greedy_once_upon_a_time.json")));
        var root = document.RootElement;
        return (root.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                root.GetProperty("generated_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray());
    }

    public static IEnumerable<(string Text, int[] Ids)> Encodings()
    {
        using var document = JsonDocument.Parse(File.ReadAllText(TestPaths.SharedFile("models", "stories260K", "tok512_encodings.json")));
        foreach (var c in document.RootElement.GetProperty("cases").EnumerateArray())
            yield return (c.GetProperty("text").GetString()!, c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray());
    }

    /// <summary>The golden text of ../shared/models/README.md (prompt included, 200 positions).</summary>
    public const string GoldenText =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n" +
        "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I want to play with your ball, but I can't find it.\"\n" +
        "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\n" +
        "Lily didn't want to help her mom, so she";
}
