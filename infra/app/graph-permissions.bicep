// Application permissions of the app's identity, granted with the Microsoft Graph Bicep extension.
// main.bicep decides which roles (infra/permissions.json: feature -> roles); nothing here names a role.
// Deploying this needs Privileged Role Administrator (or Global Administrator) in Entra ID.
extension microsoftGraphV1

@description('Object id of the managed identity (its service principal).')
param principalId string

@description('Microsoft Graph app roles (values such as ThreatHunting.Read.All).')
param graphAppRoles array

@description('Office 365 Exchange Online app roles (Exchange.ManageAsApp for connector actions).')
param exchangeAppRoles array = []

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000'
}

resource exchangeOnline 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000002-0000-0ff1-ce00-000000000000'
}

resource graphGrants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for role in graphAppRoles: {
  principalId: principalId
  resourceId: graph.id
  appRoleId: filter(graph.appRoles, appRole => appRole.value == role)[0].id
}]

resource exchangeGrants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for role in exchangeAppRoles: {
  principalId: principalId
  resourceId: exchangeOnline.id
  appRoleId: filter(exchangeOnline.appRoles, appRole => appRole.value == role)[0].id
}]

output graphAppRoles array = graphAppRoles
output exchangeAppRoles array = exchangeAppRoles
