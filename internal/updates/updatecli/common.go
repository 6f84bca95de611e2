// Package updatecli implements the publisher and mirror commands so the
// binaries stay thin. Each entry takes the arguments after its command word,
// writes to the given writers and returns the exit code (0 done, 1 failed,
// 2 usage):
//
//	mamori repo init|publish|refresh|prune|rotate-root|status ...   -> Repo
//	mamori mirror serve|sync|export ...                              -> Mirror
//	mamori-agent engine update|rollback|status ...                   -> AgentEngine
//
// AgentEngine is agentcli.Engine; the agent binary should import agentcli
// directly so it does not link the publisher and mirror code. Every flag has
// an environment variable (named in -h). Errors print one line
// "prog: message" to stderr.
package updatecli

import (
	"github.com/mamori/mamori/internal/updates/agentcli"
	"github.com/mamori/mamori/internal/updates/clikit"
)

// Exit codes.
const (
	ExitOK     = clikit.ExitOK
	ExitFailed = clikit.ExitFailed
	ExitUsage  = clikit.ExitUsage
)

// AgentEngine implements "mamori-agent engine ..." (see agentcli.Engine).
var AgentEngine = agentcli.Engine

type cmd = clikit.Cmd
