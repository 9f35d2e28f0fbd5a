using System.Text.Json.Nodes;
using OnnxDecoder.Modeling;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>What the sliding-window tests read from a config and how they take a field out of config.json.</summary>
internal static class SlidingWindowConfigs
{
    /// <summary>Each layer's window as our config says (null: full attention).</summary>
    public static int?[] Windows(DecoderConfig c) =>
        [.. Enumerable.Range(0, c.NumLayers).Select(i => c.SlidingLayers is { } sliding && !sliding[i] ? null : c.SlidingWindow)];

    /// <summary>The config.json text without <paramref name="field"/> (its class default then applies).</summary>
    public static string Without(string json, string field)
    {
        var root = JsonNode.Parse(json)!.AsObject();
        root.Remove(field);
        return root.ToJsonString();
    }
}
