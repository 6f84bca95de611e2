// Package agentproto holds the agent wire protocol: the generated protobuf and
// gRPC types of agent.proto and the capability version. It has no behaviour
// and imports nothing from this module (a test guards that).
//
// Regenerate with `make proto` after editing agent.proto.
package agentproto

// CapabilityVersion is the protocol capability this build speaks. Bump it
// whenever a message or field gains meaning, and add one line to the log
// below saying what the new version adds. Peers send theirs in EnrollRequest,
// Hello and Welcome and must tolerate any higher value.
//
//	1 (2026-11-22): Enroll, Session with Hello/Welcome, CheckIn/Ack with
//	                hashed inventory sections and outbox events, WakeUp,
//	                RetryLater back-pressure, gzip-compressed sections.
//	2 (2026-11-22): Configuration pushes and applied/refused versions in
//	                Hello and CheckIn; TaskRuns pushes (runs, cancellations);
//	                the Upload call for files of task runs.
//	3 (2026-11-22): RetryLater during a session: the server is stopping on
//	                purpose and tells each agent when to come back (spread
//	                over its agents); the agent ends the session and honours
//	                the hint as at Hello.
const CapabilityVersion = 3

// MinCapabilityVersion is the oldest peer this build still serves.
const MinCapabilityVersion = 1

// ServiceName is the gRPC service path prefix, useful for routing and metrics.
const ServiceName = "mamori.agent.v1.Agent"
