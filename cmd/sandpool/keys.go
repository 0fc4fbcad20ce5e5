package main

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandpool/sandpool/client"
)

func (c *cli) keysCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage API keys (admin)"}
	var tenant string
	var admin, e2b bool
	create := &cobra.Command{
		Use: "create --tenant NAME [--admin] [--e2b]", Short: "Create an API key and print it", Args: cobra.NoArgs,
		RunE: act(c, func(ctx context.Context, cl *client.Client, _ []string) (*client.Key, error) {
			if tenant == "" {
				return nil, errors.New("--tenant is required")
			}
			return cl.CreateKeyWith(ctx, client.KeyRequest{Tenant: tenant, Admin: admin, E2B: e2b})
		}, func(k *client.Key) error { return c.line(k.Secret) }),
	}
	create.Flags().StringVar(&tenant, "tenant", "", "tenant the key belongs to")
	create.Flags().BoolVar(&admin, "admin", false, "the key may manage keys and templates")
	create.Flags().BoolVar(&e2b, "e2b", false, "make the key in the form the E2B SDKs accept (e2b_...)")
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List API keys", Args: cobra.NoArgs,
		RunE: act(c, func(ctx context.Context, cl *client.Client, _ []string) ([]client.Key, error) {
			return cl.ListKeys(ctx)
		}, func(keys []client.Key) error {
			rows := make([][]string, 0, len(keys))
			for _, k := range keys {
				state := "valid"
				if k.RevokedAt != nil {
					state = "revoked"
				}
				rows = append(rows, []string{k.ID, k.Tenant, strconv.FormatBool(k.Admin), state, k.CreatedAt.Local().Format(time.DateTime)})
			}
			return c.table("ID\tTENANT\tADMIN\tSTATE\tCREATED", rows)
		}),
	}
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke an API key", Args: cobra.ExactArgs(1),
		RunE: act(c, func(ctx context.Context, cl *client.Client, args []string) (any, error) {
			return nil, cl.RevokeKey(ctx, args[0])
		}, nil),
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
