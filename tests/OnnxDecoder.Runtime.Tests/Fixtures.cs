using OnnxDecoder.Exporters;
using OnnxDecoder.Modeling;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>stories260K exported once per lowering for the whole test run.</summary>
[SetUpFixture]
public class Fixtures
{
    private static string _root = "";
    private static readonly Dictionary<(Lowering, bool), string> Folders = new();
    private static readonly object Gate = new();

    [OneTimeSetUp] public void Create() => _root = TestPaths.NewTempFolder("runtime-tests");
    [OneTimeTearDown] public void Delete() => Directory.Delete(_root, recursive: true);

    public static string Root => _root;

    private static readonly Dictionary<(string, int, Lowering, int?), string> Synth = new();

    /// <summary>The synth llama-tiny preset (random weights, byte-level BPE vocabulary of 512), exported with the ort lowering unless told.</summary>
    public static string SynthLlamaTiny(Lowering lowering = Lowering.Ort) => SynthExport("llama-tiny", seed: 3, lowering);

    /// <summary>A synth preset's checkpoint (random weights from <paramref name="seed"/>) exported once for the whole run:
    /// <paramref name="maxLength"/> null keeps the preset's context.</summary>
    public static string SynthExport(string preset, int seed, Lowering lowering = Lowering.Ort, int? maxLength = null)
    {
        lock (Gate)
        {
            if (Synth.TryGetValue((preset, seed, lowering, maxLength), out var exported)) return exported;
            string name = $"synth-{preset}{(seed == 3 ? "" : $"-seed{seed}")}";
            string checkpoint = Path.Combine(_root, name + "-checkpoint");
            if (!Directory.Exists(checkpoint)) Exporters.Synth.SynthPresets.Write(preset, seed, checkpoint);
            string folder = Path.Combine(_root, name + (lowering == Lowering.Ort ? "" : $"-{lowering}") + (maxLength is { } length ? $"-max{length}" : ""));
            using (var opened = Checkpoint.Open(checkpoint)) ModelFolderWriter.Write(folder, opened, new ExportOptions { Lowering = lowering, MaxLength = maxLength });
            return Synth[(preset, seed, lowering, maxLength)] = folder;
        }
    }

    public static string Stories(Lowering lowering, bool float16 = false)
    {
        lock (Gate)
        {
            if (Folders.TryGetValue((lowering, float16), out var folder)) return folder;
            folder = Path.Combine(_root, $"stories260k-{lowering}{(float16 ? "-fp16" : "")}");
            ModelFolderWriter.Export(Exporters.Tests.Stories260K.LegacyCheckpoint, Exporters.Tests.Stories260K.Tokenizer, folder, new ExportOptions { Lowering = lowering, Float16 = float16 });
            Folders[(lowering, float16)] = folder;
            return folder;
        }
    }
}
