using Google.Protobuf;
using OnnxDecoder.Onnx;
using OnnxDecoder.Onnx.Proto;

namespace OnnxDecoder.Onnx.Tests;

public class ModelCheckerTests
{
    // A valid two-node graph: x -> Neg (n1) -> a -> Softmax (n2) -> y
    private static ModelProto ValidModel()
    {
        var b = new GraphBuilder();
        var x = b.Input("x", ElementType.Float, 2, 3);
        Value a, y;
        using (b.Scope("n1")) a = b.Op("Neg", [x]);
        using (b.Scope("n2")) y = b.Op("Softmax", [a], Attr.Int("axis", 1));
        b.Output(y, "y", ElementType.Float, 2, 3);
        return b.Build().ToModelProto();
    }

    [Test]
    public void A_valid_graph_has_no_errors() => Assert.That(ModelChecker.Check(ValidModel()), Is.Empty);

    [Test]
    public void Nodes_out_of_topological_order_are_reported_with_node_and_value()
    {
        var model = ValidModel();
        var first = model.Graph.Node[0];
        model.Graph.Node.RemoveAt(0);
        model.Graph.Node.Add(first);
        Assert.That(ModelChecker.Check(model), Has.One.EqualTo(
            "node '/n2/Softmax' (Softmax): input '/n1/Neg/output_0' is produced by '/n1/Neg', which comes later (nodes are not in topological order)"));
    }

    [Test]
    public void An_undefined_input_is_reported()
    {
        var model = ValidModel();
        model.Graph.Node[0].Input[0] = "ghost";
        Assert.That(ModelChecker.Check(model), Has.One.EqualTo("node '/n1/Neg' (Neg): input 'ghost' is not defined by any graph input, initializer or node"));
    }

    [Test]
    public void A_value_defined_twice_is_reported()
    {
        var model = ValidModel();
        model.Graph.Node[1].Output[0] = "x";
        Assert.That(ModelChecker.Check(model), Has.Some.Contains("node '/n2/Softmax' (Softmax): output 'x' is already defined elsewhere"));
    }

    [Test]
    public void An_output_that_nothing_produces_is_reported()
    {
        var model = ValidModel();
        model.Graph.Output[0].Name = "logits";
        Assert.That(ModelChecker.Check(model), Has.One.EqualTo("graph output 'logits' is not produced by any node, input or initializer"));
    }

    [Test]
    public void A_domain_without_opset_import_is_reported()
    {
        var model = ValidModel();
        model.Graph.Node[0].Domain = "com.microsoft";
        Assert.That(ModelChecker.Check(model), Has.One.EqualTo("node '/n1/Neg' (Neg): domain 'com.microsoft' has no opset import"));
    }

    [Test]
    public void An_attribute_of_the_wrong_type_is_reported()
    {
        var model = ValidModel();
        model.Graph.Node[1].Attribute[0] = new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Float, F = 1 };
        Assert.That(ModelChecker.Check(model), Has.One.EqualTo("node '/n2/Softmax' (Softmax): attribute 'axis' must be Int, not Float"));
    }

    [Test]
    public void An_unknown_attribute_on_a_known_op_is_reported()
    {
        var model = ValidModel();
        model.Graph.Node[1].Attribute.Add(new AttributeProto { Name = "axes", Type = AttributeProto.Types.AttributeType.Int, I = 0 });
        Assert.That(ModelChecker.Check(model), Has.One.StartsWith("node '/n2/Softmax' (Softmax): attribute 'axes' is not an attribute of Softmax"));
    }

    [Test]
    public void An_attribute_whose_value_does_not_match_its_declared_type_is_reported()
    {
        var model = ValidModel();
        model.Graph.Node[1].Attribute[0] = new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, S = ByteString.CopyFromUtf8("1") };
        Assert.That(ModelChecker.Check(model), Has.One.Contains("attribute 'axis' is declared Int but holds 1 value field(s) that do not match it"));
    }

    [Test]
    public void An_integer_attribute_of_zero_is_still_on_the_wire()
    {
        // proto3 drops default scalars unless the field tracks presence; ONNX needs `i = 0` written.
        var attribute = Attr.Int("axis", 0);
        var parsed = NodeProto.Parser.ParseFrom(new NodeProto { Attribute = { TestAccess.ToProto(attribute) } }.ToByteArray());
        Assert.That(parsed.Attribute[0].HasI, Is.True);
        Assert.That(parsed.Attribute[0].I, Is.Zero);
    }

    [Test]
    public void Duplicate_node_names_are_reported()
    {
        var model = ValidModel();
        model.Graph.Node[1].Name = "/n1/Neg";
        Assert.That(ModelChecker.Check(model), Has.Some.EqualTo("node '/n1/Neg' (Softmax): node name is used twice"));
    }

    [Test]
    public void A_graph_without_outputs_is_reported()
    {
        var model = ValidModel();
        model.Graph.Output.Clear();
        Assert.That(ModelChecker.Check(model), Has.One.EqualTo("the graph declares no outputs"));
    }
}

internal static class TestAccess
{
    // Round-trip an Attr through a node built by GraphBuilder, without reaching into internals.
    public static AttributeProto ToProto(Attr attribute)
    {
        var b = new GraphBuilder();
        var x = b.Input("x", ElementType.Float, 2);
        b.Output(b.Op("Softmax", [x], attribute), "y", ElementType.Float, 2);
        return b.Build().ToModelProto().Graph.Node[0].Attribute[0];
    }
}
