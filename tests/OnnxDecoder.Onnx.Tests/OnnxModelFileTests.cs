using Google.Protobuf;
using OnnxDecoder.Onnx;
using OnnxDecoder.Onnx.Proto;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Onnx.Tests;

/// <summary>Reading ONNX files written by others: external data references are hostile input.</summary>
public class OnnxModelFileTests
{
    private string _root = "";
    private string _folder = "";
    private string _modelPath = "";
    private readonly float[] _weights = Enumerable.Range(0, 512).Select(i => i * 0.5f).ToArray();

    [SetUp]
    public void SetUp()
    {
        _root = TestPaths.NewTempFolder();
        _folder = Path.Combine(_root, "model");
        _modelPath = Path.Combine(_folder, "model.onnx");
        var b = new GraphBuilder();
        var x = b.Input("x", ElementType.Float, 512);
        var w = b.Initializer("w", TensorData.From<float>(_weights, 512));
        b.Output(b.Op("Add", [x, w]), "y", ElementType.Float, 512);
        ModelWriter.Save(b.Build(), _modelPath, new ModelWriterOptions { ExternalDataThreshold = 16 });
    }

    [TearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    private void Tamper(Action<TensorProto> change)
    {
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(_modelPath));
        change(model.Graph.Initializer.Single(t => t.Name == "w"));
        File.WriteAllBytes(_modelPath, model.ToByteArray());
    }

    private void SetEntry(string key, string value) => Tamper(t =>
    {
        var entry = t.ExternalData.FirstOrDefault(e => e.Key == key);
        if (entry is null) t.ExternalData.Add(new StringStringEntryProto { Key = key, Value = value });
        else entry.Value = value;
    });

    private void AssertRejected(string messagePart)
    {
        var error = Assert.Throws<ModelFormatException>(() => OnnxModelFile.Load(_modelPath).Dispose())!;
        Assert.That(error.Message, Does.StartWith(_modelPath + ": "), "the error names the file");
        Assert.That(error.Message, Does.Contain(messagePart));
    }

    [Test]
    public void Our_own_file_loads_and_its_external_tensor_reads_back()
    {
        using var file = OnnxModelFile.Load(_modelPath);
        var tensor = file.Model.Graph.Initializer.Single();
        var bytes = file.ReadTensorBytes(tensor);
        Assert.That(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray(), Is.EqualTo(_weights));
        Assert.That(file.ExternalTensors.Single().Offset, Is.Zero);
    }

    [Test]
    public void A_location_with_dot_dot_that_escapes_the_folder_is_rejected()
    {
        File.Copy(_modelPath + ".data", Path.Combine(_root, "x"));
        SetEntry("location", "../x");
        AssertRejected("external location '../x' escapes the model's folder");
    }

    [Test]
    public void A_dot_dot_that_stays_inside_the_folder_is_allowed()
    {
        Directory.CreateDirectory(Path.Combine(_folder, "sub"));
        SetEntry("location", "sub/../model.onnx.data");
        using var file = OnnxModelFile.Load(_modelPath);
        Assert.That(file.ExternalTensors.Single().FilePath, Is.EqualTo(_modelPath + ".data"));
    }

    [Test]
    public void An_absolute_location_is_rejected()
    {
        SetEntry("location", _modelPath + ".data");
        AssertRejected("is absolute");
    }

    [Test]
    public void A_symlinked_data_file_is_rejected()
    {
        string outside = Path.Combine(_root, "secret.bin");
        File.Copy(_modelPath + ".data", outside);
        File.CreateSymbolicLink(Path.Combine(_folder, "link.data"), outside);
        SetEntry("location", "link.data");
        AssertRejected("goes through a symbolic link ('link.data')");
    }

    [Test]
    public void A_symlinked_directory_on_the_way_is_rejected()
    {
        Directory.CreateDirectory(Path.Combine(_root, "elsewhere"));
        File.Copy(_modelPath + ".data", Path.Combine(_root, "elsewhere", "w.data"));
        Directory.CreateSymbolicLink(Path.Combine(_folder, "dir"), Path.Combine(_root, "elsewhere"));
        SetEntry("location", "dir/w.data");
        AssertRejected("goes through a symbolic link ('dir')");
    }

    [Test]
    public void A_data_file_with_a_second_hard_link_is_rejected()
    {
        var link = new System.Diagnostics.ProcessStartInfo("ln", [_modelPath + ".data", Path.Combine(_root, "hard.data")]);
        using (var process = System.Diagnostics.Process.Start(link)!) process.WaitForExit();
        AssertRejected("has more than one hard link");
    }

    [TestCase("checksum2", "key 'checksum2' is not allowed")]
    [TestCase("Location", "key 'Location' is not allowed")]
    public void Unknown_external_data_keys_are_rejected(string key, string message)
    {
        SetEntry(key, "x");
        AssertRejected(message);
    }

    [TestCase("offset", "-1", "offset '-1' is not a non-negative integer")]
    [TestCase("length", "-2048", "length '-2048' is not a non-negative integer")]
    [TestCase("offset", "12abc", "offset '12abc' is not a non-negative integer")]
    [TestCase("length", "99999999999999999999", "is not a non-negative integer")]
    public void Malformed_or_negative_numbers_are_rejected(string key, string value, string message)
    {
        SetEntry(key, value);
        AssertRejected(message);
    }

    [Test]
    public void A_range_past_the_end_of_the_file_is_rejected()
    {
        SetEntry("offset", "4096");
        AssertRejected("runs past the end of 'model.onnx.data'");
    }

    [Test]
    public void A_length_that_does_not_match_the_shape_is_rejected()
    {
        SetEntry("length", "1024");
        AssertRejected("external length 1024 does not match its shape [512] (2048 bytes)");
    }

    [Test]
    public void A_missing_location_or_file_is_rejected()
    {
        Tamper(t => t.ExternalData.Remove(t.ExternalData.Single(e => e.Key == "location")));
        AssertRejected("external_data has no location");
        SetUp();
        SetEntry("location", "nothing.data");
        AssertRejected("external data file 'nothing.data' not found");
    }

    [Test]
    public void A_duplicate_key_is_rejected()
    {
        Tamper(t => t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "0" }));
        AssertRejected("key 'offset' is given twice");
    }

    [Test]
    public void Dimensions_that_overflow_are_rejected_before_any_arithmetic_wraps()
    {
        Tamper(t => { t.Dims.Clear(); t.Dims.Add((1L << 42) + 1); t.Dims.Add(1L << 42); });
        AssertRejected("dimensions [4398046511105, 4398046511104] are negative or overflow");
    }

    [Test]
    public void Garbage_and_truncated_files_are_rejected_with_the_file_named()
    {
        byte[] original = File.ReadAllBytes(_modelPath);
        File.WriteAllBytes(_modelPath, original.AsSpan(0, original.Length / 2).ToArray());
        AssertRejected("");
        File.WriteAllBytes(_modelPath, "this is not onnx"u8.ToArray());
        AssertRejected("");
    }
}
