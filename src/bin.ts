/** The executable's entry: runs the CLI and sets the exit code. */
import { runCli } from './cli/index.js';

process.exitCode = await runCli(process.argv);
