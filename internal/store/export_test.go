package store

import (
	"context"
	"fmt"
	"strings"
)

// Columns lists each table's columns as "name type", the types folded to
// what the other dialect calls them (for the schema parity test).
func (db *DB) Columns(ctx context.Context) (map[string][]string, error) {
	q := `SELECT m.name, p.name, p.type FROM sqlite_master m, pragma_table_info(m.name) p
		WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid`
	if db.postgres {
		q = `SELECT table_name, column_name, data_type FROM information_schema.columns
			WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`
	}
	rows, err := db.ro.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	fold := map[string]string{"bigint": "integer", "bytea": "blob"}
	for rows.Next() {
		var table, col, typ string
		if err := rows.Scan(&table, &col, &typ); err != nil {
			return nil, err
		}
		typ = strings.ToLower(typ)
		if f, ok := fold[typ]; ok {
			typ = f
		}
		out[table] = append(out[table], fmt.Sprintf("%s %s", col, typ))
	}
	return out, rows.Err()
}

// AddAgentCertificate stores one more certificate for an enrolled computer
// (storetest's AgentSession tests). The product issues a computer one
// certificate, at enrollment; the schema allows several.
func (db *DB) AddAgentCertificate(ctx context.Context, c *AgentCertificate) error {
	_, err := db.rw.ExecContext(ctx, `INSERT INTO agent_certificates (serial, computer_id, issued_at, not_after, revoked_at) VALUES (?, ?, ?, ?, ?)`,
		c.Serial, c.ComputerID, ms(c.IssuedAt), ms(c.NotAfter), nullMS(c.RevokedAt))
	return err
}
