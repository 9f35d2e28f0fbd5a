using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests.Sampling;

/// <summary>The CLI's sampling flags are the table's rows: names, ranges and refusals.</summary>
[Parallelizable(ParallelScope.None)]
public class SamplingFlagTests
{
    [TestCase("generate")]
    [TestCase("chat")]
    public void Help_lists_every_table_parameter_with_its_range(string verb)
    {
        var help = OnnxDecoderCli.Run(verb, "--help");
        Assert.That(help.ExitCode, Is.EqualTo(0), help.Stderr);
        foreach (var parameter in SamplingParameters.All)
            Assert.That(help.Stdout, Does.Contain(parameter.Flag).And.Contain(parameter.RangeText), parameter.Name);
    }

    [TestCase("--top-p", "1.5", "'--top-p' is 1.5; it must be between 0 and 1")]
    [TestCase("--temperature", "-1", "'--temperature' is -1; it must be between 0 and 2")]
    [TestCase("--top-k", "2.5", "'--top-k' is 2.5; it must be a whole number between 0 and")]
    public void A_flag_outside_its_range_is_refused_in_one_line_naming_the_flag(string flag, string value, string message)
    {
        var run = OnnxDecoderCli.Run("generate", "--model", Fixtures.Stories(Lowering.Ort), "--prompt", "Once", flag, value);
        Assert.That(run.ExitCode, Is.Not.EqualTo(0));
        Assert.That(run.Stderr.Trim(), Does.Contain(message).And.Not.Contain("\n"));
    }
}
