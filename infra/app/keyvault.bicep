// Key Vault in RBAC mode with purge protection. It holds the Teams Workflows webhook URL, which carries
// its own signature: the app setting is a Key Vault reference and the URL is never a plain setting.
param name string
param location string = resourceGroup().location
param tags object = {}
param teamsWebhookSecretName string

@secure()
@description('Teams Workflows webhook URL. Empty: no secret is written (put it in later, see docs/deploy.md).')
param teamsWebhookUrl string = ''

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enablePurgeProtection: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    publicNetworkAccess: 'Enabled'
  }
}

resource teamsWebhook 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(teamsWebhookUrl)) {
  parent: vault
  name: teamsWebhookSecretName
  properties: {
    value: teamsWebhookUrl
    contentType: 'Teams Workflows webhook URL'
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
