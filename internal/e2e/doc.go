// Package e2e holds end-to-end tests: real `mamori` and `mamori-agent`
// processes (built once per test run) on loopback, and in-process tests that
// drive the real server.New/Run and agent.New/Run where a test needs to
// inject something (a clock, an inventory change, hostile messages).
package e2e
