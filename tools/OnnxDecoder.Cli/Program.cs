using System.CommandLine;
using OnnxDecoder.Cli;

var root = new RootCommand("onnx-decoder: export decoder-only language models to ONNX and run them with ONNX Runtime");
foreach (var command in Commands.All()) root.Subcommands.Add(command);
return root.Parse(args).Invoke();
